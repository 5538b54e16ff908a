"""A simulated observatory: a real OpenSSH server (Debian's openssh-server) the station delivers to.

Used by the delivery tests and by `pycam sim station`. It makes its own host key, a client key for the station and
an authorized_keys file, and runs `/usr/sbin/sshd -D -f <its config>`:

- as root, in a network namespace of its own joined to the station's (the host's, or the sim master's namespace)
  by a veth pair: `cut()` takes the station's end of the link down (an uplink cut: no reset, packets just stop),
  `restore()` brings it back;
- otherwise on loopback at a free port: `cut()` kills the server and its connections, `restore()` starts it again.

Names (namespace, interfaces, addresses) are derived from the process id and a counter, so runs never collide.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from controller.logging import get_logger

SSHD = "/usr/sbin/sshd"
_counter = itertools.count()
log = get_logger("sim.observatory")


def sshd_available() -> bool:
    return Path(SSHD).is_file() and shutil.which("ssh-keygen") is not None and shutil.which("rsync") is not None


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Observatory:
    def __init__(self, folder: Path, netns: bool | None = None, station_netns: str | None = None):
        self.folder = Path(folder).resolve()
        self.remote_dir = self.folder / "inbox"
        n = next(_counter)
        self.use_netns = (os.geteuid() == 0 and shutil.which("ip") is not None) if netns is None else netns
        self.station_netns = station_netns  # the namespace the station (rsync client) runs in; None: this one
        tag = f"{os.getpid() % 100000}{n}"
        self.netns = f"pycam-obs{tag}"
        self.veth = (f"pvs{tag}"[:15], f"pvo{tag}"[:15])  # station end, observatory end
        pid = os.getpid() + 7919 * n
        # A link-local /30 per observatory (never a routable private range; the station link uses 169.254.231.x).
        third, base = 100 + (pid >> 6) % 100, (pid & 0x3F) * 4
        self.addresses = (f"169.254.{third}.{base + 1}", f"169.254.{third}.{base + 2}")
        self.host = self.addresses[1] if self.use_netns else "127.0.0.1"
        self.port = 22 if self.use_netns else _free_port()
        self.user = getpass.getuser()
        self.key_file = self.folder / "station_key"
        self._proc: subprocess.Popen | None = None
        self._ns_made = False

    # --------------------------------------------------------------------------------------------- set-up

    def start(self) -> Observatory:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.remote_dir.mkdir(parents=True, exist_ok=True)
        for name in ("host_key", "station_key"):
            key = self.folder / name
            if not key.exists():
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pycam-{name}", "-f", str(key)])
        (self.folder / "authorized_keys").write_text((self.folder / "station_key.pub").read_text())
        listen = self.host
        config = [
            f"Port {self.port}", f"ListenAddress {listen}", f"HostKey {self.folder / 'host_key'}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "PermitRootLogin prohibit-password", f"AllowUsers {self.user}", "X11Forwarding no",
            "Subsystem sftp internal-sftp", "LogLevel ERROR",
            # A dead client connection is closed after ~6 s, so the server's rsync keeps its partial file.
            "ClientAliveInterval 2", "ClientAliveCountMax 3",
        ]  # fmt: skip
        (self.folder / "sshd_config").write_text("\n".join(config) + "\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        if self.use_netns:
            self._netns_up()
        self._start_sshd()
        log.info("observatory_up", host=self.host, port=self.port, netns=self.netns if self.use_netns else None)
        return self

    def _ip(self, ns: str | None, *args: str) -> list[str]:
        return ["ip", *(("-n", ns) if ns else ()), *args]

    def _netns_up(self) -> None:
        self._netns_down()
        self._ns_made = True
        st, ob = self.veth
        cmds = [
            ["ip", "netns", "add", self.netns],
            ["ip", "link", "add", st, "type", "veth", "peer", "name", ob],
            ["ip", "link", "set", ob, "netns", self.netns],
            self._ip(self.netns, "addr", "add", f"{self.addresses[1]}/30", "dev", ob),
            self._ip(self.netns, "link", "set", ob, "up"),
            self._ip(self.netns, "link", "set", "lo", "up"),
        ]
        if self.station_netns:
            cmds.append(["ip", "link", "set", st, "netns", self.station_netns])
        cmds += [
            self._ip(self.station_netns, "addr", "add", f"{self.addresses[0]}/30", "dev", st),
            self._ip(self.station_netns, "link", "set", st, "up"),
        ]
        for cmd in cmds:
            _run(cmd)

    def _netns_down(self) -> None:
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)  # drops the veth pair too
        subprocess.run(self._ip(self.station_netns, "link", "del", self.veth[0]), capture_output=True)

    def _start_sshd(self) -> None:
        cmd = [SSHD, "-D", "-e", "-f", str(self.folder / "sshd_config")]
        if self.use_netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        log_fh = open(self.folder / "sshd.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self._proc = subprocess.Popen(cmd, stdout=log_fh, stderr=log_fh, start_new_session=True)
        finally:
            log_fh.close()
        self._wait_listening()

    def _wait_listening(self, timeout_s: float = 20.0) -> None:
        """Until sshd accepts connections (a connect probe from the station's side), or its exit is reported."""
        probe = ["ip", "netns", "exec", self.station_netns] if self.station_netns else []
        code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({self._proc.returncode}): see {self.folder / 'sshd.log'}")
            r = subprocess.run([*probe, "python3", "-c", code, self.host, str(self.port)], capture_output=True)
            if r.returncode == 0:
                return
            try:  # between probes: wait for sshd's exit, the one event that ends the wait early
                self._proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        raise RuntimeError(f"sshd did not listen on {self.host}:{self.port} within {timeout_s} s")

    def _stop_sshd(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        import psutil

        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        proc.kill()  # the listener first: no connection is accepted after this
        proc.wait()
        if self.use_netns:  # sessions sshd forked meanwhile (they setsid: not in its group), found by namespace
            pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout
            for pid in {int(p) for p in pids.split()} - {k.pid for k in kids}:
                with contextlib.suppress(psutil.Error):
                    kids.append(psutil.Process(pid))
        for p in kids:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(kids, timeout=5)

    # -------------------------------------------------------------------------------------------- control

    def delivery_config(self, **over) -> dict:
        """The station's [delivery] section for this observatory."""
        cfg = {
            "enabled": True, "host": self.host, "port": self.port, "user": self.user,
            "key_file": str(self.key_file), "known_hosts": str(self.folder / "known_hosts"),
            "remote_dir": str(self.remote_dir),
        }  # fmt: skip
        cfg.update(over)
        return cfg

    def cut(self) -> None:
        log.warning("observatory_uplink_cut", netns=self.use_netns)
        if self.use_netns:
            _run(self._ip(self.station_netns, "link", "set", self.veth[0], "down"))
        else:
            self._stop_sshd()

    def restore(self) -> None:
        log.info("observatory_uplink_restored", netns=self.use_netns)
        if self.use_netns:
            _run(self._ip(self.station_netns, "link", "set", self.veth[0], "up"))
            self._wait_listening()
        else:
            self._start_sshd()

    def files(self) -> list[Path]:
        """Whole files delivered (rsync's temporary and partial files excluded)."""
        return sorted(
            p
            for p in self.remote_dir.rglob("*")
            if p.is_file() and not any(x.startswith(".") for x in p.relative_to(self.remote_dir).parts)
        )

    def stop(self) -> None:
        self._stop_sshd()
        if self._ns_made:
            self._netns_down()
            self._ns_made = False
        log.info("observatory_down")

    def __enter__(self) -> Observatory:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
