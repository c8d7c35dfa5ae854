"""Where the servers are: the target records (``DatabaseTarget``, ``RedisTarget``, ``Secret``) and the
readers that build them from the environment's variables (a mapping ``config.Settings.from_env`` hands
over; nothing here reads ``os.environ``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, cast

import attrs
from psycopg.conninfo import make_conninfo

from datalayer._environ import (
    DATABASE_PARTS,
    DATABASE_REPLICAS,
    DATABASE_ROUTING,
    DATABASE_VARIABLES,
    REDIS_MODE,
    REDIS_PARTS,
    REDIS_VARIABLES,
)
from datalayer._redis_urls import check_cluster_url, parse_redis_url, redis_db, redis_display
from datalayer._urls import (
    SSLMODES,
    check_port,
    checked_pg_params,
    is_host,
    netloc,
    parse_database_url,
    pg_display,
    pg_repr,
    split_database_urls,
)
from datalayer._validators import (
    check_text,
    optional,
)
from datalayer.errors import ConfigError

__all__ = [
    "POOLERS",
    "DatabaseTarget",
    "RedisTarget",
    "Secret",
    "read_database",
    "read_direct",
    "read_pooler",
    "read_redis",
    "read_replicas",
    "read_secret",
]

# DATABASE_POOLER: what sits between datalayer and PostgreSQL. "transaction": a transaction pooler
# (PgBouncer pool_mode=transaction), which a setting must say (PgBouncer 1.18 does not identify itself).
POOLERS = ("none", "transaction")


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


def _cluster_seed(target: RedisTarget, attribute: attrs.Attribute[bool], cluster: bool) -> None:
    if not isinstance(cluster, bool):
        raise ConfigError("RedisTarget.cluster must be True or False", variable="RedisTarget.cluster")
    if cluster:
        check_cluster_url(target.url, "RedisTarget.url")


@attrs.frozen
class RedisTarget:
    """Where Redis is: a redis-py URL without password, plus the password apart."""

    url: str = attrs.field(converter=_clean_redis_url, repr=_redis_repr)
    password: Secret | None = attrs.field(default=None, validator=optional("password", Secret))
    embedded: bool = False
    # REDIS_CLUSTER: ``url`` is a seed node of a Redis Cluster (database 0, over TCP).
    cluster: bool = attrs.field(default=False, validator=_cluster_seed)

    @property
    def display(self) -> str:
        """The URL for humans and logs, every secret parameter masked (the password is never part of it)."""
        return redis_display(self.url)


def read_pooler(env: Mapping[str, str], database: DatabaseTarget | None) -> Literal["none", "transaction"]:
    raw = env.get("DATABASE_POOLER", "none").strip().lower()
    if raw == "session":
        raise ConfigError(
            "DATABASE_POOLER=session: a session pooler (PgBouncer pool_mode=session) keeps each client's session "
            "and needs nothing special; leave DATABASE_POOLER unset for it ('transaction' for pool_mode=transaction)",
            variable="DATABASE_POOLER",
        )
    if raw not in POOLERS:
        raise ConfigError(
            f"DATABASE_POOLER must be {' or '.join(repr(p) for p in POOLERS)} ('transaction' for PgBouncer in "
            f"pool_mode=transaction), got {raw!r}",
            variable="DATABASE_POOLER",
        )
    if raw != "none" and database is None:
        raise ConfigError(
            f"DATABASE_POOLER={raw} needs DATABASE_URL (the pooler's address); the embedded PostgreSQL has no pooler",
            variable="DATABASE_POOLER",
        )
    return cast(Literal["none", "transaction"], raw)


def read_direct(env: Mapping[str, str], database: DatabaseTarget | None, pooler: str = "none") -> DatabaseTarget | None:
    name = DATABASE_ROUTING[1]
    if name not in env:
        return None
    if database is None:
        raise ConfigError(
            f"{name} is set without DATABASE_URL; set DATABASE_URL to the pooler and {name} to the server",
            variable=name,
        )
    params, password = parse_database_url(env[name], name)
    checked = checked_pg_params(params, {}, name)
    if pooler != "none" and _server_and_db(checked) == _server_and_db(database.params):
        raise ConfigError(
            f"{name} is DATABASE_URL's host, port and database: with DATABASE_POOLER={pooler}, DATABASE_URL is "
            f"the pooler and {name} must be the PostgreSQL server itself (migrations and session advisory "
            "locks need a session of their own)",
            variable=name,
        )
    return DatabaseTarget(params=checked, password=Secret(password) if password is not None else None)


def _server_and_db(params: Mapping[str, str]) -> tuple[str, str, str]:
    return params.get("host", ""), params.get("port", "5432"), params.get("dbname", params.get("user", ""))


def read_replicas(env: Mapping[str, str], database: DatabaseTarget | None) -> tuple[DatabaseTarget, ...]:
    (name,) = DATABASE_REPLICAS
    if name not in env:
        return ()
    if database is None:
        raise ConfigError(
            f"{name} is set without DATABASE_URL (or DATABASE_HOST): replicas serve reads of a configured primary",
            variable=name,
        )
    targets: list[DatabaseTarget] = []
    for i, url in enumerate(split_database_urls(env[name], name), 1):
        try:
            params, password = parse_database_url(url, f"{name} entry {i}")
            checked = checked_pg_params(params, {}, f"{name} entry {i}")
        except ConfigError as e:  # the message names the entry; the variable is the list's
            raise ConfigError(str(e), variable=name) from None
        target = DatabaseTarget(params=checked, password=Secret(password) if password is not None else None)
        server = {"port": "5432", **target.params}  # libpq's default port
        if (same := next((j for j, t in enumerate(targets, 1) if {"port": "5432", **t.params} == server), 0)) > 0:
            raise ConfigError(
                f"{name} entry {i} is the same server as entry {same}: list each replica once", variable=name
            )
        targets.append(target)
    return tuple(targets)


def read_secret(env: Mapping[str, str], name: str) -> Secret | None:
    return Secret(env[name]) if name in env else None


def read_database(env: Mapping[str, str]) -> DatabaseTarget | None:
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


def read_redis(env: Mapping[str, str]) -> RedisTarget | None:
    cluster = _redis_cluster(env)
    if not any(v in env for v in REDIS_VARIABLES):
        if cluster:
            raise ConfigError(
                "REDIS_CLUSTER=1 needs REDIS_URL (or REDIS_HOST and REDIS_PORT) naming a seed node of the "
                "cluster; the embedded Redis is a single server",
                variable="REDIS_CLUSTER",
            )
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
    if cluster:
        check_cluster_url(url, "REDIS_URL" if "REDIS_URL" in env else "REDIS_DB")
    return RedisTarget(url=url, password=Secret(password) if password is not None else None, cluster=cluster)


def _redis_cluster(env: Mapping[str, str]) -> bool:
    (name,) = REDIS_MODE
    raw = env.get(name, "0").strip().lower()
    if raw not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise ConfigError(
            f"{name} must be 1 (REDIS_URL is a seed node of a Redis Cluster) or 0 (a single Redis, the "
            f"default), got {raw!r}",
            variable=name,
        )
    return raw in ("1", "true", "yes", "on")


def _one_or_the_other(env: Mapping[str, str], url: str, parts: tuple[str, ...]) -> None:
    # A URL beside its parts: one of them would be silently dropped (the password included).
    both = [name for name in parts if name in env]
    if both:
        raise ConfigError(
            f"{both[0]} is set together with {url}; set {url} or the parts ({', '.join(parts)}), not both",
            variable=both[0],
        )
