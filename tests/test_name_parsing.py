"""A station file name is parsed once per process, where it comes in, and passed on as a record (issue 9, point 5).

The check reads every module of controller/, processing/ and states/ with ast and names each one that parses a
station file name (calls `parse_name`, `ImageName.parse`, `SpectrumName.parse`) or picks one apart by hand (a string
with the original's name fields, `fltrA`, `fltrB`, `coadd_`, used to match or split names) outside the agreed places.
Everything else asks the data store's index (`controller/storage/index.py`) or is handed the record.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controller", "processing", "states")
PARSERS = {"parse_name"}
NAME_CLASSES = {"ImageName", "SpectrumName"}
NAME_FIELDS = ("fltrA", "fltrB", "coadd_")

# module -> why it may parse: where a name comes into a process, or the store that knows what is on disk.
ALLOWED = {
    "controller/storage/names.py": "the naming module: the format and the parser themselves",
    "controller/storage/index.py": "the data store's index: the master's one scan of its data root at start-up",
    "controller/storage/datastore.py": "the store checks a bare name it is given (never used as a path unchecked)",
    "controller/acquisition/naming.py": "the capture naming: the capture journal's names, read back at start-up",
    "controller/link/receiver.py": "the link receiver: a name off the network, parsed once, passed on as a record",
    "controller/link/spool.py": "the slave's store (its spool): a name from elsewhere, and the days it holds",
    "processing/worker.py": "the worker's entry (another process): a stored name from the command queue",
    "processing/images.py": "the folder scan of `pycam process` and of the worker's full scan",
    "controller/sim/pace.py": "the sim driver (its own process) watches the master's disk from outside: a glob",
    "processing/doas.py": "reading a spectrum file by path alone (benchmarks, `pycam process`); the worker passes its record",
}


def name_parsing(source: str) -> list[str]:
    """What in this module's source parses a station file name: `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in PARSERS:
                found.append(f"{node.lineno}: {f.id}()")
            elif (
                isinstance(f, ast.Attribute) and f.attr == "parse"
                and isinstance(f.value, ast.Name) and f.value.id in NAME_CLASSES
            ):  # fmt: skip
                found.append(f"{node.lineno}: {f.value.id}.parse()")
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and any(k in node.value for k in NAME_FIELDS)
        ):
            if not _is_docstring_like(node.value):
                found.append(f"{node.lineno}: a name pattern {node.value[:40]!r}")
    return found


def _is_docstring_like(text: str) -> bool:
    return " " in text.strip()  # prose (docs, log text) names the fields; a pattern or a name has no spaces


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_station_file_names_are_parsed_only_where_they_come_in():
    offenders = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        hits = name_parsing(path.read_text(encoding="utf-8"))
        if hits and rel not in ALLOWED:
            offenders[rel] = hits
    assert offenders == {}, (
        "these modules parse station file names; ask the data store's index (controller/storage/index.py) or pass "
        f"the record on instead: {offenders}"
    )


def test_every_allowed_module_still_parses():
    """The list stays short: a module that no longer parses leaves it."""
    idle = [rel for rel in ALLOWED if not name_parsing((ROOT / rel).read_text(encoding="utf-8"))]
    assert idle == []


def test_the_check_finds_each_kind_of_parsing():
    src = (
        "from controller.storage.names import ImageName, SpectrumName, parse_name\n"
        "a = parse_name(p.name)\n"
        "b = ImageName.parse(n)\n"
        "c = SpectrumName.parse(n)\n"
        "d = root.rglob('*_fltrA_*_Plume.png')\n"
        "e = ImageName(t, 'A', 1, 2, 'Plume')  # a record made, not parsed\n"
        "'''A docstring may name fltrA and coadd_ fields.'''\n"
    )
    assert [hit.split(":")[0] for hit in name_parsing(src)] == ["2", "3", "4", "5"]
