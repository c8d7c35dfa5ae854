"""No embedded server outlives the processes using it: normal exit, SIGTERM, SIGKILL; the test cache is empty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import ROOT, clean_env

# A service's whole stack on the embedded defaults: pool, cache (Redis and its table), log handler.
SERVICE = textwrap.dedent("""
    import logging, select, sys
    from datalayer import SystemLogHandler, connection
    from datalayer.cache import get_cache_manager

    handler = SystemLogHandler(service="lifecycle", flush_interval=0.1)
    logging.getLogger().addHandler(handler)
    with connection() as db:
        db.execute("SELECT 1")
    cache = get_cache_manager()
    cache.cache_user_data(1, {"name": "Ann"})
    assert cache.get_cached_user_data(1) == {"name": "Ann"}
    logging.getLogger("svc").warning("serving")
    print("ready", flush=True)
    # Until the test closes stdin (a normal exit) or kills this process. Short waits, not one blocking
    # read: a signal the kernel hands another thread is acted on when the main thread next runs Python.
    while not select.select([sys.stdin], [], [], 0.1)[0]:
        pass
    sys.stdin.read()
""")


def servers_of(home: Path) -> list[str]:
    """The postgres and redis-server processes working in ``home`` (their working directory is in it:
    redis-server chdirs to its data directory, postgres to its data directory), zombies excluded."""
    found = []
    home = home.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = Path(os.readlink(proc / "exe")).name
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone, a zombie, or a kernel thread
            continue
        if name in ("postgres", "redis-server") and (cwd == home or home in cwd.parents):
            found.append(f"{proc.name} {name} in {cwd}")
    return found


def wait_until_gone(home: Path, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := servers_of(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def start_service(home: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVICE],
        env=clean_env(DATALAYER_HOME=str(home)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the service did not start: {line!r} {proc.communicate(timeout=30)}")
    return proc


@pytest.fixture
def home(dl_home: Path) -> Path:
    return dl_home


def test_servers_stop_at_normal_exit(home: Path) -> None:
    proc = start_service(home)
    assert len(servers_of(home)) >= 2, "the embedded PostgreSQL and Redis should be running"
    _out, err = proc.communicate("", timeout=120)
    assert proc.returncode == 0, err
    # Immediately: a normal exit stops them itself, before the process ends.
    assert servers_of(home) == [], "embedded servers outlived their process"
    assert "could not be written" not in err  # the handler flushed before the server stopped


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_servers_stop_when_the_process_is_killed(home: Path, sig: signal.Signals) -> None:
    proc = start_service(home)
    assert len(servers_of(home)) >= 2
    try:
        proc.send_signal(sig)
        # Wait for the signal's effect before closing stdin: an EOF first would end the service normally.
        proc.wait(timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
        proc.communicate(timeout=60)  # closes the pipes, also after a failure
    assert proc.returncode != 0
    assert wait_until_gone(home) == [], f"embedded servers outlived a process killed by {sig.name}"


def test_a_shared_server_stops_with_its_last_user(home: Path) -> None:
    first = start_service(home)
    second = start_service(home)  # reuses the running servers
    _out, err = second.communicate("", timeout=120)
    assert second.returncode == 0, err
    assert len(servers_of(home)) >= 2, "the servers stopped while another process still used them"
    first.kill()
    first.communicate(timeout=60)
    assert wait_until_gone(home) == []


def test_a_server_left_by_a_dead_process_is_adopted_and_stopped(home: Path) -> None:
    # Both the service and its watcher die (a container's kill of everything): the next user of the
    # home finds the leftover server, uses it, and stops it at its exit.
    proc = start_service(home)
    watchers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_watcher_of(p, proc.pid)]
    assert len(watchers) == 1
    os.kill(int(watchers[0].name), signal.SIGKILL)
    proc.kill()
    proc.communicate(timeout=60)
    time.sleep(0.5)
    assert servers_of(home), "expected the leftover servers of this scenario"
    again = start_service(home)
    _out, err = again.communicate("", timeout=120)
    assert again.returncode == 0, err
    assert servers_of(home) == []


def _is_watcher_of(proc: Path, pid: int) -> bool:
    try:
        cmd = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(a.endswith(b"_watchdog.py") for a in cmd) and any(a.startswith(f"{pid}:".encode()) for a in cmd)


@pytest.mark.parametrize("round_", [1, 2])
def test_each_test_gets_an_empty_cache(dl_cache: object, round_: int) -> None:
    from datalayer.cache import CacheManager, get_cache_manager

    assert isinstance(dl_cache, CacheManager)
    assert get_cache_manager() is dl_cache  # the process-wide cache during the test
    key = dl_cache.keys.user(7)
    assert dl_cache.get(key) is None, "a value from an earlier test was served"
    dl_cache.set(key, {"round": round_}, ttl=600)
    dl_cache.l1.clear()
    assert dl_cache.get(key) == {"round": round_}


def test_a_redis_process_of_the_tests_dies_with_its_test_process(dl_home: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from datalayer.testing import RedisProcess
        r = RedisProcess(Path({str(dl_home)!r}) / "redis")
        r.start()
        print(r.proc.pid, flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=clean_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid), "the test's redis-server outlived it"


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2 :].split()[0]
