"""The embedded servers admit no other local user: a password, private sockets, the server's own group."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
from helpers import ROOT, clean_env, run_py

from datalayer import ConfigError, Settings, _embedded_home, _watchdog
from datalayer.embedded import embedded_postgres_bin, start_embedded_postgres, start_embedded_redis

SERVE = textwrap.dedent("""
    import sys
    from datalayer import Settings
    from datalayer.embedded import start_embedded_postgres, start_embedded_redis
    s = Settings.from_env()
    pg = start_embedded_postgres(s)
    redis = start_embedded_redis(s)
    print(pg.params["host"], redis.url.removeprefix("unix://"), flush=True)
    sys.stdin.read()
""")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another local user needs root")


# The virtualenv's interpreter may live where another user cannot run it; the system's can, and the
# snippets below need only the standard library.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    assert runuser, "runuser or setpriv is needed to act as another local user"
    prefix = [runuser, "-u", "nobody", "--"] if runuser.endswith("runuser") else [
        runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]  # fmt: skip
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60, check=False, cwd="/")


@pytest.fixture
def served(dl_home: Path) -> object:
    home = dl_home
    proc = subprocess.Popen([sys.executable, "-c", SERVE], env=clean_env(DATALAYER_HOME=str(home)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        proc.kill()
        raise AssertionError(f"the servers did not start: {proc.communicate(timeout=30)}")
    try:
        yield home, Path(line[0]), Path(line[1])
    finally:
        proc.communicate("", timeout=120)


@needs_root
def test_another_local_user_cannot_connect(served: tuple[Path, Path, Path]) -> None:
    home, socket_dir, redis_socket = served
    psql = embedded_postgres_bin() / "psql"
    r = _as_nobody(str(psql), "-X", "-w", "-h", str(socket_dir), "-U", "postgres", "-d", "postgres",
                   "-c", "COPY (SELECT 1) TO PROGRAM 'id'")  # fmt: skip
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    # Through python too, whatever the client: the directory holding the socket cannot be entered.
    code = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(socket_dir / '.s.PGSQL.5432')!r})"
    r = _as_nobody(SYSTEM_PYTHON, "-I", "-c", code)
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
    code = f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(redis_socket)!r})"
    r = _as_nobody(SYSTEM_PYTHON, "-I", "-c", code)
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
    r = _as_nobody(SYSTEM_PYTHON, "-I", "-c", f"print(open({str(home / 'postgres.password')!r}).read())")
    assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr


def test_the_server_asks_for_the_password(served: tuple[Path, Path, Path]) -> None:
    home, socket_dir, _ = served
    # Whoever reaches the socket (its owner, root) still needs the password.
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", connect_timeout=5).close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", password="guess").close()
    pw_file = home / "postgres.password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = pw_file.read_text().strip()
    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", password=password) as conn:
        rules = conn.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
        assert rules and all(rule == ("local", "scram-sha-256") for rule in rules), rules
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        pid = conn.execute("SELECT pg_postmaster_start_time(), pg_backend_pid()").fetchone()
        assert pid is not None
        status = Path(f"/proc/{pid[1]}/status").read_text()
    gids = next(ln for ln in status.splitlines() if ln.startswith("Gid:")).split()[1:]
    groups = next(ln for ln in status.splitlines() if ln.startswith("Groups:")).split()[1:]
    if os.geteuid() == 0:
        assert "0" not in gids + groups, f"the server runs with root's group: {gids} {groups}"
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.joinpath("run").stat().st_mode) == 0o700


def test_the_password_never_shows(served: tuple[Path, Path, Path]) -> None:
    home, _, _ = served
    password = (home / "postgres.password").read_text().strip()
    code = textwrap.dedent("""
        import logging
        logging.basicConfig(level=logging.DEBUG)
        from datalayer import Settings, connection
        from datalayer.embedded import start_embedded_postgres
        t = start_embedded_postgres(Settings.from_env())
        print(repr(t), t.display)
        with connection() as db:
            db.execute("SELECT 1")
    """)
    r = run_py(code, clean_env(DATALAYER_HOME=str(home)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr
    assert password not in (home / "pgdata" / "log").read_text()


def test_a_home_too_long_for_a_socket_is_a_config_error(tmp_path: Path) -> None:
    home = tmp_path / ("h" * max(1, 108 - len(str(tmp_path)) - len("/pgdata/.s.PGSQL.5432")))
    assert len(str(home / "pgdata" / ".s.PGSQL.5432")) > 107
    with pytest.raises(ConfigError, match="DATALAYER_HOME") as e:
        start_embedded_postgres(Settings(home=home))
    assert e.value.variable == "DATALAYER_HOME" and "shorter" in str(e.value)
    assert not (home / "pgdata").exists(), "nothing is started or created for a refused home"
    longer = tmp_path / ("r" * (110 - len(str(tmp_path))))
    with pytest.raises(ConfigError, match="DATALAYER_HOME") as e:
        start_embedded_redis(Settings(home=longer))
    assert e.value.variable == "DATALAYER_HOME"


def test_a_trust_data_directory_is_upgraded_in_place(dl_home: Path) -> None:
    # What an older datalayer left: embedded-postgres's own server, initialised with trust, with data.
    home = dl_home
    old = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        import embedded_postgres, psycopg
        # Left running, as older datalayer versions left it after every process.
        server = embedded_postgres.get_server({str(home / "pgdata")!r}, cleanup_mode=None)
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as c:
            c.execute("CREATE TABLE kept (v text)")
            c.execute("INSERT INTO kept VALUES ('from before')")
    """)
    r = run_py(old, clean_env(), timeout=180)
    assert r.returncode == 0, r.stderr
    try:
        _upgrade_and_check(home)
    finally:
        _watchdog.stop_servers(home)  # whatever happened, nothing of this test keeps running


def _upgrade_and_check(home: Path) -> None:
    assert "trust" in (home / "pgdata" / "pg_hba.conf").read_text()
    assert _watchdog.postmaster_pid(home / "pgdata") is not None
    code = textwrap.dedent("""
        from pathlib import Path
        from datalayer import Settings, _watchdog
        from datalayer.embedded import start_embedded_postgres
        import psycopg
        t = start_embedded_postgres(Settings.from_env())
        with psycopg.connect(t.conninfo(dbname="postgres")) as c:
            print(c.execute("SELECT v FROM kept").fetchone()[0])
            print(c.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method <> 'scram-sha-256'").fetchone()[0])
        try:
            psycopg.connect(host=t.params["host"], user="postgres", dbname="postgres").close()
            print("connected without a password")
        except psycopg.OperationalError:
            print("refused")
        status = open(f"/proc/{_watchdog.postmaster_pid(Path(t.params['host']))}/status").read()
        print([ln.split()[1] for ln in status.splitlines() if ln.startswith("Gid:")][0])
    """)
    r = run_py(code, clean_env(DATALAYER_HOME=str(home)), timeout=180)
    assert r.returncode == 0, r.stderr
    out = r.stdout.split("\n")
    assert out[:3] == ["from before", "0", "refused"], r.stdout
    if os.geteuid() == 0:
        assert out[3] != "0", "the server left running with root's group was not restarted"
    assert "now requires a password" in r.stderr
    assert "trust" not in (home / "pgdata" / "pg_hba.conf").read_text()
    deadline = time.monotonic() + 30
    while (home / "pgdata" / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def _untouched(target: Path) -> None:
    st = target.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755) and not any(target.iterdir()), (
        f"{target} was changed through a link: uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}, "
        f"{sorted(p.name for p in target.iterdir())}"
    )


def _refused(home: Path, start: object, *words: str) -> None:
    try:
        with pytest.raises(ConfigError, match="DATALAYER_HOME") as e:
            start(Settings(home=home))  # type: ignore[operator]
    finally:
        _watchdog.stop_servers(home)  # whatever happened, nothing of this test keeps running
    assert e.value.variable == "DATALAYER_HOME"
    for word in words:
        assert word in str(e.value), str(e.value)


@needs_root
@pytest.mark.parametrize("start", [start_embedded_postgres, start_embedded_redis])
def test_a_home_another_user_owns_is_refused_and_no_link_in_it_is_followed(dl_home: Path, start: object) -> None:
    # What the reviewer did: nobody owns the home, plants pgdata (and run) -> an empty root-owned directory.
    home, target = dl_home / "home", dl_home / "rootdir"
    dl_home.chmod(0o711)  # nobody passes through to the home
    home.mkdir()
    target.mkdir(mode=0o755)
    os.chown(home, pwd.getpwnam("nobody").pw_uid, -1)
    for name in ("pgdata", "run"):
        r = _as_nobody("ln", "-s", str(target), str(home / name))
        assert r.returncode == 0, r.stderr
    _refused(home, start, "belongs to uid", "chown")
    _untouched(target)


@needs_root
def test_a_home_others_can_write_to_is_refused(dl_home: Path) -> None:
    dl_home.chmod(0o777)
    _refused(dl_home, start_embedded_postgres, "writable by other users", "chmod go-w")
    dl_home.chmod(0o775)
    _refused(dl_home, start_embedded_redis, "writable by other users")
    assert not (dl_home / "pgdata").exists() and not (dl_home / "run").exists()


@needs_root
@pytest.mark.parametrize(("start", "name"), [(start_embedded_postgres, "pgdata"), (start_embedded_redis, "run")])
def test_a_link_planted_in_a_sticky_home_is_never_followed(dl_home: Path, start: object, name: str) -> None:
    # A sticky home others may write to (like /tmp): what they plant there is refused, never followed.
    home, target = dl_home / "home", dl_home / "rootdir"
    dl_home.chmod(0o711)  # nobody passes through to the home
    home.mkdir()
    home.chmod(0o1777)
    target.mkdir(mode=0o755)
    r = _as_nobody("ln", "-s", str(target), str(home / name))
    assert r.returncode == 0, r.stderr
    _refused(home, start, f"holds {name} as a symbolic link", f"remove {home / name}")
    _untouched(target)
    (home / name).unlink()
    r = _as_nobody("mkdir", str(home / name))  # nobody's own directory: the server's files would be theirs
    assert r.returncode == 0, r.stderr
    _refused(home, start, f"holds {name} owned by uid")


def test_a_directory_made_private_is_never_reached_through_a_link(dl_home: Path) -> None:
    # A link swapped in after the home was checked: private_dir neither chmods nor chowns its target.
    target = dl_home / "target"
    target.mkdir(mode=0o755)
    (dl_home / "pgdata").symlink_to(target)
    with pytest.raises(ConfigError, match="DATALAYER_HOME") as e:
        _embedded_home.private_dir(dl_home / "pgdata")
    assert "not a directory" in str(e.value) and "remove" in str(e.value)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    _embedded_home.private_dir(dl_home / "fresh")
    assert stat.S_IMODE((dl_home / "fresh").stat().st_mode) == 0o700
