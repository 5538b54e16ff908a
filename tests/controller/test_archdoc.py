"""docs/architecture.md: its generated parts (layout, machines, services) are current with the code."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from controller import archdoc
from controller.cli import main


def test_the_architecture_page_is_current(repo_root):
    page = (repo_root / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert page == archdoc.render(page), "regenerate: pycam states --architecture docs/architecture.md"


def test_the_services_table_lists_each_supervisor_service_and_no_protocol():
    table = archdoc.services()
    for name in ("link", "disk", "ext_port", "worker", "power", "darks"):
        assert f"| {name} |" in table, name
    assert "`Service`" not in table and "`Startable`" not in table


def test_a_new_package_shows_in_the_layout(tmp_path):
    for pkg, doc in (("controller", "The station."), ("states", "Machines."), ("processing", "Rates.")):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f'"""{doc}"""\n')
    (tmp_path / "controller" / "gadgets").mkdir()
    (tmp_path / "controller" / "gadgets" / "__init__.py").write_text('"""Gadgets: small things. More words."""\n')
    assert "| `controller/gadgets/` | Gadgets: small things |" in archdoc.layout(tmp_path)


def test_the_command_rewrites_a_stale_page_and_refuses_one_without_markers(tmp_path):
    page = tmp_path / "architecture.md"
    sections = [f"{archdoc.BEGIN.format(name=n)}\nstale\n{archdoc.END.format(name=n)}" for n in archdoc.SECTIONS]
    page.write_text("# A\n\n" + "\n\n".join(sections) + "\n")
    result = CliRunner().invoke(main, ["states", "--architecture", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    assert "stale" not in text and "| `station` |" in text and text == archdoc.render(text)
    page.write_text("# no markers\n")
    result = CliRunner().invoke(main, ["states", "--architecture", str(page)])
    assert result.exit_code != 0 and "no generated section 'layout'" in result.output
    with pytest.raises(ValueError):
        archdoc.render("nothing")
