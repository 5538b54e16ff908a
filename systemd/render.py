"""What systemd/install.sh needs from the station config, in Python (the config is TOML and validated by the
project's own loader). Run by the installer with the project's interpreter: `python systemd/render.py CMD ...`.

  unit    render pycam-<role>.service from its template and the shared sandbox block
  config  install the station config (the master's gets a random control-port token when it has none)
  facts   shell assignments the installer reads (data root and mount, link key file)

Every error is one line on stderr naming the file or key, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import shlex
import sys
from pathlib import Path

STATE_DIR = Path("/var/lib/pycam")  # StateDirectory=pycam: the unit passes it as --state-dir %S/pycam


HOMES = (Path("/home"), Path("/root"), Path("/run/user"))  # what ProtectHome=yes hides


class InstallError(Exception):
    pass


def _load(path: str):
    from controller.config import load_config
    from controller.errors import ConfigError

    try:
        return load_config(path)
    except ConfigError as e:
        raise InstallError(f"{path}: {e}") from e


def data_mount(cfg) -> str:
    """The data disk the master's unit requires: storage.mount_point, else the data root itself."""
    return cfg.storage.mount_point or str(cfg.storage.data_root)


def writable_paths(cfg, role: str) -> list[str]:
    """Paths outside the unit's own directories the service writes (ProtectSystem=strict makes the rest read-only)."""
    paths = [str(cfg.storage.data_root)] if role == "master" else [str(cfg.storage.spool_dir)]
    if role == "master" and cfg.storage.flat_copy_dir:
        paths.append(cfg.storage.flat_copy_dir)
    return [p for p in paths if not Path(p).is_relative_to(STATE_DIR)]


def key_file(cfg) -> str:
    custom = getattr(cfg.network, "link_key_file", "")
    return custom or str(STATE_DIR / "link.key")


def render_unit(template: str, sandbox: str, values: dict[str, str], cfg, role: str) -> str:
    lines = []
    if role == "master":
        lines.append(f"RequiresMountsFor={data_mount(cfg)}")
    text = template.replace("@PYCAM_SANDBOX@", sandbox.strip())
    rw = [f"ReadWritePaths=-{p}" for p in writable_paths(cfg, role)]
    text = text.replace("@PYCAM_UNIT_PATHS@", "\n".join(lines) if lines else "# (no data disk on the slave)")
    text = text.replace("@PYCAM_RW_PATHS@", "\n".join(rw) if rw else "# (everything it writes is in StateDirectory)")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    code = [values.get("PYCAM_HOME", ""), values.get("PYCAM_VENV", "")]
    code += [str(Path(c, "bin/python").resolve()) for c in code[1:] if c]
    if any(Path(c).is_relative_to(h) for c in code if c for h in HOMES):
        # The project (or its interpreter) lives in a home folder: readable, still not writable.
        text = text.replace("ProtectHome=yes", "ProtectHome=read-only")
    left = sorted(set(re.findall(r"@PYCAM_[A-Z_]+@", text)))
    if left:
        raise InstallError(f"unit template: placeholders not rendered: {', '.join(left)}")
    return text


TOKEN_LINE = re.compile(r"^\s*auth_token\s*=\s*(\"[^\"]*\"|'[^']*')\s*(#.*)?$", re.MULTILINE)


def _token_line(token: str) -> str:
    # json.dumps writes a valid TOML basic string for the hex token the installer makes
    return "auth_token = " + json.dumps(token)


def with_token(text: str, token: str) -> str:
    """The config text with `network.auth_token` set to `token` (an empty one replaced, a missing one added)."""
    section = re.search(r"^\[network\]\s*$", text, re.MULTILINE)
    if section is None:
        return text.rstrip("\n") + "\n\n[network]\n" + _token_line(token) + "\n"
    nxt = re.search(r"^\[", text[section.end() :], re.MULTILINE)
    end = section.end() + (nxt.start() if nxt else len(text) - section.end())
    body = text[section.end() : end]
    if TOKEN_LINE.search(body):
        body = TOKEN_LINE.sub(_token_line(token), body, count=1)
    else:
        body = "\n" + _token_line(token) + body
    return text[: section.end()] + body + text[end:]


def install_config(src: str, dst: str, role: str) -> str:
    """Copy the station config to `dst` (0640); the master's gets a token when it has none. Says what it did."""
    cfg = _load(src)
    text = Path(src).read_text(encoding="utf-8")
    did = "installed"
    out = Path(dst)
    if role == "master" and not cfg.network.auth_token:
        # Re-running the installer keeps the token clients already use.
        kept = _load(dst).network.auth_token if out.exists() else ""
        text = with_token(text, kept or secrets.token_hex(16))
        did = "kept the control-port token in" if kept else "added a control-port token to"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(0o640)
    tmp.replace(out)
    installed = _load(str(out))
    if installed.storage != cfg.storage:
        raise InstallError(f"{src}: relative paths in [storage] change meaning when installed as {dst}; use absolute")
    if role == "master" and not installed.network.auth_token:
        raise InstallError(f"{dst}: network.auth_token still empty after adding one")
    return f"{did} {dst}"


def facts(cfg, role: str) -> str:
    values = {
        "PYCAM_DATA_ROOT": str(cfg.storage.data_root),
        "PYCAM_SPOOL_DIR": str(cfg.storage.spool_dir),
        "PYCAM_KEY_FILE": key_file(cfg),
        "PYCAM_STATION": cfg.station.name,
        "PYCAM_MOUNT_POINT": cfg.storage.mount_point,
    }
    if role == "master":
        values["PYCAM_DATA_MOUNT"] = data_mount(cfg)
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    unit = sub.add_parser("unit")
    for opt in ("--role", "--config", "--template", "--sandbox", "--out"):
        unit.add_argument(opt, required=True)
    unit.add_argument("--set", action="append", default=[], help="KEY=VALUE placeholder values")
    conf = sub.add_parser("config")
    for opt in ("--role", "--config", "--out"):
        conf.add_argument(opt, required=True)
    fact = sub.add_parser("facts")
    for opt in ("--role", "--config"):
        fact.add_argument(opt, required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "unit":
            values = dict(item.split("=", 1) for item in args.set)
            text = render_unit(Path(args.template).read_text(), Path(args.sandbox).read_text(), values,
                               _load(args.config), args.role)  # fmt: skip
            out = Path(args.out)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(out)
        elif args.cmd == "config":
            sys.stdout.write(install_config(args.config, args.out, args.role) + "\n")
        else:
            sys.stdout.write(facts(_load(args.config), args.role))
    except (InstallError, OSError) as e:
        sys.stderr.write(f"install.sh: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
