"""[delivery] and [web] config: refused with the key that is wrong."""

from __future__ import annotations

import pytest

from controller.config import config_from_dict
from controller.errors import ConfigError


@pytest.mark.parametrize(
    "section,values,key",
    [
        ("delivery", {"enabled": True, "key_file": "/k"}, "delivery.host"),
        ("delivery", {"enabled": True, "host": "obs"}, "delivery.key_file"),
        ("delivery", {"retry_initial_s": 10.0, "retry_max_s": 5.0}, "delivery.retry_max_s"),
        ("delivery", {"bwlimit_kbps": -1}, "delivery.bwlimit_kbps"),
        ("web", {"port": 70000}, "web.port"),
        ("web", {"listen": "x"}, "web.listen"),
    ],
)
def test_bad_values_name_their_key(section, values, key):
    with pytest.raises(ConfigError) as e:
        config_from_dict({section: values})
    assert key in str(e.value)


def test_defaults_off_and_conf_files_load(repo_root):
    from controller.config import load_config

    cfg = config_from_dict({})
    assert not cfg.web.enabled and not cfg.delivery.enabled and cfg.web.port == 8080
    assert load_config(repo_root / "conf" / "sim.toml").web.enabled
    assert not load_config(repo_root / "conf" / "master.toml").delivery.enabled


def test_sources_results_status_logs_and_raw_only_when_asked(tmp_path):
    from controller.delivery import station_sources

    base = {"storage": {"data_root": str(tmp_path / "data"), "state_dir": str(tmp_path / "state")}}
    names = [s.name for s in station_sources(config_from_dict(base), tmp_path / "processed")]
    assert names == ["processed", "status"]
    cfg = config_from_dict({**base, "delivery": {"include_raw": True, "log_dir": str(tmp_path / "logs")}})
    sources = {s.name: s for s in station_sources(cfg, tmp_path / "processed")}
    assert list(sources) == ["processed", "status", "logs", "raw"]
    assert sources["raw"].root == tmp_path / "data" and sources["status"].names == ("status.json",)


def test_rsync_is_resumable_bandwidth_limited_and_never_removes_sources(tmp_path):
    from controller.delivery import make_delivery

    cfg = config_from_dict(
        {
            "station": {"name": "villarrica"},
            "storage": {"state_dir": str(tmp_path / "state")},
            "delivery": {"enabled": True, "host": "obs.example", "port": 2222, "user": "pycam", "key_file": "/k",
                         "remote_dir": "/srv/pycam", "bwlimit_kbps": 150, "timeout_s": 20.0},
        }
    )  # fmt: skip
    svc = make_delivery(cfg, tmp_path / "processed")
    cmd = svc.rsync_command(svc.sources["processed"])
    assert "--partial-dir=.rsync-partial" in cmd and "--bwlimit=150" in cmd and "--timeout=20" in cmd
    assert not any("remove" in c or c.startswith("--del") for c in cmd)
    assert cmd[-2:] == [f"{tmp_path / 'processed'}/", "pycam@obs.example:/srv/pycam/villarrica/processed/"]
    ssh = cmd[cmd.index("-e") + 1]
    assert "-p 2222 -i /k" in ssh and "BatchMode=yes" in ssh and "StrictHostKeyChecking=accept-new" in ssh
