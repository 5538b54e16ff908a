"""Nothing at import time touches hardware or heavy libraries: `import controller` and `pycam --help` in a fresh
interpreter import none of picamera2, seabreeze, pyplis, cv2. And no import cycles in controller/, states/,
processing/ (the module graph built with ast)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("picamera2", "seabreeze", "pyplis", "cv2")

PROBE = """
import json, sys
{body}
print("@@" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def imported_heavy(body: str) -> list[str]:
    code = PROBE.format(body=body, heavy=set(HEAVY))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("@@"))
    return json.loads(line[2:])


@pytest.mark.parametrize(
    "body",
    [
        "import controller",
        "import controller.config, controller.hardware.factory, controller.storage.datastore, controller.acquisition.autoexposure",
        "import controller.diagnose, controller.cli.capture, controller.sim.scene",
        "from controller.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    ],
)
def test_no_vendor_or_processing_library_at_import(body):
    assert imported_heavy(body) == []


def test_probe_detects_an_import():
    """The check can fail: importing seabreeze directly shows up."""
    pytest.importorskip("seabreeze")
    assert "seabreeze" in imported_heavy("import seabreeze")


def test_opening_sim_devices_imports_no_vendor_library():
    body = (
        "from controller.config import Config\nfrom controller.timekeeping.clock import ManualClock\n"
        "from controller.hardware.factory import open_camera, open_spectrometer, open_power_lines\n"
        "c = Config(); open_camera(c, 'A', ManualClock()).capture(); open_spectrometer(c, ManualClock()).capture()\n"
        "open_power_lines(c).close()"
    )
    assert imported_heavy(body) == []


# ------------------------------------------------------------------------------------------------- import cycles

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "states", "processing")


def module_graph(root=ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the project modules it imports, at any depth (lazy imports in functions included: a cycle hidden
    in a function is still a cycle), `if TYPE_CHECKING:` blocks excluded (they never run)."""

    mods = {}
    for pkg in packages:
        for path in (root / pkg).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path

    def target(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    def type_checking(node: ast.If) -> bool:
        return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(node.test)

    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        out: set[str] = set()
        todo = list(ast.iter_child_nodes(ast.parse(path.read_text(encoding="utf-8"))))
        while todo:
            node = todo.pop()
            if isinstance(node, ast.If) and type_checking(node):
                todo.extend(node.orelse)
                continue
            if isinstance(node, ast.Import):
                out.update(t for a in node.names if (t := target(a.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                out.update(t for a in node.names if (t := target(f"{base}.{a.name}")))
            todo.extend(ast.iter_child_nodes(node))
        out.discard(mod)
        graph[mod] = out
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(tuple(sorted(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles_in_the_project():
    cycles = import_cycles(module_graph())
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check can fail: two modules importing each other (one lazily, in a function) are a cycle."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    assert import_cycles(module_graph(tmp_path, ("pkg",))) == [("pkg.a", "pkg.b")]


def test_the_layout_stays_readable():
    """Issue 9: no module over 500 lines, at most 15 modules at the top of controller/ (the rest in packages)."""
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    ]
    assert long == []
    assert len(list((ROOT / "controller").glob("*.py"))) <= 15
