"""Who uses the embedded servers of a DATALAYER_HOME, and the watcher that stops them when nobody does.

Every process that starts or reuses an embedded server holds a lease on its home (its pid and start
time in ``.embedded-users``, changed only under the ``.embedded.lock`` flock). The servers stop when
the last live lease goes: at the process's normal exit (``datalayer.embedded``), or — when it is
killed, even by SIGKILL — in its watcher: a small process that reads a pipe from it and sees the pipe
close when the kernel closes the dead process's files. PR_SET_PDEATHSIG cannot serve here: the
postmaster and redis-server daemonise, so their parent is never the process that uses them.

This file runs as a script in the watcher (``python -I _watchdog.py``): standard library only, no
datalayer import, so it starts in milliseconds and cannot shadow or be shadowed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".embedded.lock"
USERS_FILE = ".embedded-users"
REDIS_PID = Path("run") / "redis.pid"
PG_PID = Path("pgdata") / "postmaster.pid"
STOP_TIMEOUT = 30.0
_PROC = Path("/proc/self/stat").exists()


def process_id(pid: int) -> str | None:
    """``pid:start-time`` of a live process (None if gone or a zombie): the start time tells a reused
    pid from the process that held the lease."""
    if not _PROC:
        return _ps(pid, "lstart")
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return f"{pid}:{fields[19]}"


def _ps(pid: int, field: str) -> str | None:
    """Without /proc (macOS): ``ps`` says the same, a little slower."""
    r = subprocess.run(["ps", "-o", f"stat=,{field}=", "-p", str(pid)], capture_output=True, text=True, check=False)  # noqa: S603,S607
    out = r.stdout.strip()
    if r.returncode != 0 or not out or out.startswith("Z"):
        return None
    return f"{pid}:{out.split(None, 1)[1].replace(':', '.')}" if field == "lstart" else out.split(None, 1)[1]


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """The home's lock, held while servers start or stop and leases change (across processes)."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_users(home: Path) -> list[str]:
    try:
        users = json.loads((home / USERS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [u for u in users if isinstance(u, str)] if isinstance(users, list) else []


def _live(users: list[str]) -> list[str]:
    return [u for u in users if process_id(int(u.split(":")[0])) == u]


def _write_users(home: Path, users: list[str]) -> None:
    # A random name created exclusively (mkstemp: O_EXCL, 0600), so nothing planted there is followed.
    fd, tmp = tempfile.mkstemp(prefix=f".{USERS_FILE}.", suffix=".tmp", dir=home)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(users, f)
        os.replace(tmp, home / USERS_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def add_lease(home: Path, user: str) -> None:
    """Record ``user`` (a ``process_id``) as using the home's servers (call under ``locked``)."""
    users = _live(_read_users(home))
    if user not in users:
        users.append(user)
    _write_users(home, users)


def others_alive(home: Path, user: str) -> bool:
    """Whether a live process other than ``user`` holds a lease (call under ``locked``)."""
    return bool([u for u in _live(_read_users(home)) if u != user])


def release(home: Path, user: str) -> None:
    """Drop ``user``'s lease and stop the home's servers if no live process holds one any more."""
    with locked(home):
        users = [u for u in _live(_read_users(home)) if u != user]
        _write_users(home, users)
        if not users:
            stop_servers(home)


def _pid_from(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _is(pid: int, program: str, needle: str) -> bool:
    """Whether ``pid`` is ``program`` started for ``needle`` (a path), so a reused pid is left alone."""
    if not _PROC:
        command = _ps(pid, "command") or ""
        return Path(command.split(" ", 1)[0]).name == program and needle in command
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return Path(exe).name == program and os.fsencode(needle) in raw


def stop_process(pid: int, sig: int, timeout: float = STOP_TIMEOUT) -> bool:
    """Signal ``pid`` and wait until it is gone (zombies count as gone); SIGKILL after ``timeout``."""
    me = process_id(pid)
    if me is None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_id(pid) != me:
            return True
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the postmaster running on ``pgdata``, or None."""
    pid = _pid_from(pgdata / "postmaster.pid")
    if pid is not None and process_id(pid) is not None and _is(pid, "postgres", str(pgdata)):
        return pid
    return None


def redis_pid(home: Path) -> int | None:
    """The pid of the embedded redis-server of ``home``, or None."""
    pid = _pid_from(home / REDIS_PID)
    if pid is not None and process_id(pid) is not None and _is(pid, "redis-server", "redis"):
        return pid
    return None


def stop_servers(home: Path) -> None:
    """Stop the home's embedded PostgreSQL (fast shutdown) and redis-server (saves, then exits)."""
    pg = postmaster_pid(home.resolve() / "pgdata")
    if pg is not None:
        stop_process(pg, signal.SIGINT)
    rd = redis_pid(home)
    if rd is not None:
        # redis-server saves its data on SIGTERM and refuses to exit while it cannot (a full disk, a
        # removed directory): the data is a cache, so it is killed after a short wait.
        stop_process(rd, signal.SIGTERM, timeout=10.0)


def watch(pipe: int, user: str) -> None:
    """The watcher's loop: learn homes from the pipe, release them all when it closes."""
    homes: list[Path] = []
    buf = b""
    while True:
        try:
            chunk = os.read(pipe, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        homes += [Path(os.fsdecode(ln)) for ln in lines if ln and Path(os.fsdecode(ln)) not in homes]
    for home in homes:
        with contextlib.suppress(OSError):
            release(home, user)


if __name__ == "__main__":
    # Signals meant for the user's process group (Ctrl-C, a supervisor's SIGTERM) must not stop the
    # watcher before it has done its work; it ends when the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(0, sys.argv[1])
