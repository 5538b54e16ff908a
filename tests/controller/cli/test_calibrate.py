"""`pycam calibrate cells`: the field tool prints AA per cell, slope, offset and r²; --json one object."""

from __future__ import annotations

import json

from click.testing import CliRunner

from controller.cli import main


def test_calibrate_cells_prints_cells_slope_offset_r2(repo_root, shared_data, tmp_path):
    folder = shared_data / "villarrica-2018-03-26" / "Cal_1"
    conf = repo_root / "conf" / "villarrica.toml"
    res = CliRunner().invoke(main, ["calibrate", "cells", str(folder), "--config", str(conf)])
    assert res.exit_code == 0, res.output
    for word in ("304 ppm·m", "1257 ppm·m", "AA 0.", "slope", "offset", "r2"):
        assert word in res.output
    res = CliRunner().invoke(
        main, ["calibrate", "cells", str(folder), "--json", "--pyplis-out", str(tmp_path / "cells.fts")]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # pyplis logs to stderr
    assert 5e18 < data["slope"] < 8e18 and abs(data["offset"]) < 5e17
    assert [c["ppmm"] for c in data["cells"]] == [0, 304, 1257]
    assert (tmp_path / "cells.fts").stat().st_size > 0


def test_calibrate_cells_names_the_folder_when_it_has_no_cells(shared_data):
    folder = shared_data / "villarrica-2018-03-26" / "Seq_1"
    res = CliRunner().invoke(main, ["calibrate", "cells", str(folder)])
    assert res.exit_code != 0 and "Seq_1" in res.output and "gas-cell" in res.output
