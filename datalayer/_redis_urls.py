"""Rules for Redis targets: which REDIS_URL options pass to redis-py, and what may be shown of a URL."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from datalayer._urls import check_userinfo, config_error, is_host, is_socket, netloc, scheme_of, shown
from datalayer._validators import check_text

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
# Redis parameters carrying a secret (AUTH password, TLS key passphrase): never shown.
REDIS_SECRETS = frozenset({"password", "ssl_password"})
# REDIS_URL query parameters handed to redis-py. redis-py lets URL options override its keyword
# arguments, so anything else (timeouts, retries, host, username, client name) would silently undo
# what datalayer sets or point at another server.
_REDIS_TLS_QUERY = frozenset(
    {
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
    }
)
_REDIS_QUERY = _REDIS_TLS_QUERY | {"db", "password"}
_REDIS_CHOICES = {
    "ssl_cert_reqs": ("none", "optional", "required"),
    "ssl_check_hostname": ("true", "false", "1", "0", "yes", "no"),
}


def parse_redis_url(url: str, variable: str = "REDIS_URL") -> tuple[str, str | None]:
    """A clean redis-py URL (no password) and the password, from REDIS_URL; ConfigError when malformed."""
    check_text(variable, url)
    scheme = scheme_of(url, REDIS_SCHEMES, variable, "redis://, rediss:// or unix://")
    check_userinfo(url, variable)
    try:
        parts = urlsplit(url)
        port, hostname, user, secret = parts.port, parts.hostname, parts.username, parts.password
    except ValueError:
        raise config_error(variable, "has an invalid host or port (an IPv6 address goes in brackets)") from None
    if parts.fragment:
        raise config_error(variable, "must not have a '#' fragment (percent-encode '#' in a password as %23)")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    if len(query) != len(pairs):
        raise config_error(variable, "names a query parameter twice")
    for key, value in query.items():
        if key not in _REDIS_QUERY:
            raise config_error(
                variable,
                f"has query parameter {shown(key)}; datalayer sets timeouts, retries and the client name "
                f"itself and passes only {', '.join(sorted(_REDIS_QUERY))}",
            )
        if key in _REDIS_TLS_QUERY and scheme != "rediss":
            raise config_error(variable, f"has {key}, which applies to rediss:// (TLS) only")
        if key in _REDIS_CHOICES and value.lower() not in _REDIS_CHOICES[key]:
            raise config_error(variable, f"has {key} {shown(value)}; use one of {', '.join(_REDIS_CHOICES[key])}")
    password = unquote(secret) if secret is not None else None
    if "password" in query:
        if password is not None:
            raise config_error(variable, "gives a password twice (before the host and as ?password=)")
        password = query.pop("password")
    path_db = unquote(parts.path).strip("/") if scheme != "unix" else ""
    if path_db and "db" in query:
        raise config_error(variable, "gives the database twice (in the path and as ?db=)")
    if path_db or "db" in query:
        query["db"] = str(redis_db(path_db or query["db"], variable))
    if scheme == "unix":
        if not is_socket(unquote(parts.path)) or parts.netloc.rpartition("@")[2]:
            raise config_error(variable, "must be unix:///absolute/path/to/redis.sock")
        location = quote(unquote(parts.path))
    else:
        if hostname is None or not is_host(unquote(hostname)):
            raise config_error(variable, "must name a host (a host name or an IP address)")
        location = netloc(unquote(hostname), port)
    if user:
        username = unquote(user)
        if not username.isprintable() or " " in username:
            raise config_error(variable, "has a user name with spaces or control characters")
        location = f"{quote(username, safe='')}@{location}"
    db = query.pop("db", None)
    path = location if scheme == "unix" else f"{location}/{db}" if db is not None else location
    if scheme == "unix" and db is not None:
        query = {"db": db, **query}
    return f"{scheme}://{path}" + (f"?{urlencode(query)}" if query else ""), password


def redis_db(raw: str, variable: str) -> int:
    """A Redis database number, 0 to 15."""
    if not (raw.isascii() and raw.isdigit()):
        raise config_error(variable, f"must name a Redis database number (0 to 15), got {shown(raw)}")
    db = int(raw)
    if not 0 <= db <= 15:
        raise config_error(variable, f"database must be between 0 and 15, got {db}")
    return db


def redis_display(url: str) -> str:
    """A Redis URL for humans and logs: password and every secret query parameter masked."""
    try:
        parts = urlsplit(url)
        user, secret = parts.username, parts.password
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(an unparsable Redis URL)"
    auth = f"{user or ''}{':***' if secret is not None else ''}@" if user or secret is not None else ""
    pairs = [(k, "***" if k in REDIS_SECRETS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = urlencode(pairs, safe="/*")
    return f"{parts.scheme}://{auth}{host}{parts.path}" + (f"?{query}" if query else "")


def check_cluster_url(url: str, variable: str) -> None:
    """ConfigError unless ``url`` (a clean URL from parse_redis_url) can seed a Redis Cluster client."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise config_error(variable, "is a unix socket; a Redis Cluster is reached over TCP (redis:// or rediss://)")
    if unquote(parts.path).strip("/") not in ("", "0"):
        raise config_error(variable, "names a database other than 0; a Redis Cluster has database 0 only")
