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
