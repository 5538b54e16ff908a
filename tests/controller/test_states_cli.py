"""`pycam states`: tables, mermaid, and docs/state-machines.md kept in step with states/."""

from __future__ import annotations

from click.testing import CliRunner

from controller.cli import main
from controller.cli.states import MACHINES, format_markdown, load_tables


def test_tables_list_every_transition():
    result = CliRunner().invoke(main, ["states", "--machine", "station"])
    assert result.exit_code == 0, result.output
    assert "sync      offset_bad    fault     sync_retries_exhausted" in result.output
    assert "terminal: off" in result.output


def test_mermaid_has_one_diagram_per_machine():
    result = CliRunner().invoke(main, ["states", "--mermaid"])
    assert result.exit_code == 0, result.output
    tables = load_tables()
    assert result.output.count("stateDiagram-v2") == len(tables) >= 4
    assert {t.name for t in tables} <= set(MACHINES)


def test_docs_page_is_generated_from_the_current_tables(repo_root):
    page = (repo_root / "docs" / "state-machines.md").read_text()
    assert page == format_markdown(load_tables()), "regenerate: pycam states --markdown --out docs/state-machines.md"
