"""The parts of docs/architecture.md that are read off the code (the layout, the machines, the services), written
between markers by `pycam states --architecture docs/architecture.md`; a test keeps them current.

Read with `ast` (no import of the modules): the first sentence of each package's and module's docstring, the
classes that are services (`async start`, `async stop`, `status`), and the machine tables of states/.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- generated: {name} (pycam states --architecture docs/architecture.md; do not edit by hand) -->"
END = "<!-- end generated: {name} -->"


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line (without its trailing period)."""
    if not doc:
        return ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return (match.group(1) if match else paragraph).rstrip(".")


def _docstring(path: Path) -> str | None:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def layout(root: Path = ROOT) -> str:
    """A table of the packages (controller's sub-packages and top-level modules, states, processing)."""
    rows = ["| package / module | what it is |", "|---|---|"]
    entries: list[tuple[str, Path]] = [("controller/", root / "controller" / "__init__.py")]
    for path in sorted((root / "controller").iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            entries.append((f"controller/{path.name}/", path / "__init__.py"))
        elif path.suffix == ".py" and path.name != "__init__.py":
            entries.append((f"controller/{path.name}", path))
    entries += [("states/", root / "states" / "__init__.py"), ("processing/", root / "processing" / "__init__.py")]
    for label, path in entries:
        rows.append(f"| `{label}` | {_cell(first_sentence(_docstring(path))) or '-'} |")
    return "\n".join(rows)


def machines() -> str:
    """A table of the state machines declared in states/ (the full tables: docs/state-machines.md)."""
    from states import load_tables

    rows = ["| machine | states (initial first) | what it is |", "|---|---|---|"]
    for table in load_tables():
        states = [table.initial, *(s for s in table.states if s != table.initial)]
        rows.append(f"| `{table.name}` | {', '.join(states)} | {_cell(table.doc)} |")
    return "\n".join(rows)


def _is_service(node: ast.ClassDef) -> bool:
    if any(ast.unparse(base).endswith("Protocol") for base in node.bases):
        return False  # the shape itself, not a service
    methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    return (
        isinstance(methods.get("start"), ast.AsyncFunctionDef)
        and isinstance(methods.get("stop"), ast.AsyncFunctionDef)
        and isinstance(methods.get("status"), ast.FunctionDef)
    )


def _service_name(node: ast.ClassDef) -> str:
    for item in node.body:
        if (
            isinstance(item, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "name" for t in item.targets)
            and isinstance(item.value, ast.Constant)
        ):
            return str(item.value.value)
    return ""


def services(root: Path = ROOT) -> str:
    """A table of every class under controller/ with `async start()`, `async stop()` and `status()`."""
    rows = ["| service | class | module | what it is |", "|---|---|---|---|"]
    for path in sorted((root / "controller").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and _is_service(node):
                doc = first_sentence(ast.get_docstring(node)) or first_sentence(ast.get_docstring(tree))
                module = path.relative_to(root).as_posix()
                rows.append(f"| {_service_name(node) or '-'} | `{node.name}` | `{module}` | {_cell(doc)} |")
    return "\n".join(rows)


SECTIONS: dict[str, Callable[[], str]] = {"layout": layout, "machines": machines, "services": services}


def render(page: str) -> str:
    """`page` with each generated section (between its markers) rewritten from the code."""
    for name, make in SECTIONS.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(page):
            raise ValueError(f"the page has no generated section {name!r} ({begin} ... {end})")
        page = pattern.sub(lambda _m, b=begin, e=end, f=make: f"{b}\n{f()}\n{e}", page)
    return page
