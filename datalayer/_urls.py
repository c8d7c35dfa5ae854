"""Rules for connection targets: libpq parameters, hosts, URLs, and what may be shown of them.

One place decides which libpq keywords exist (the linked libpq's own list), which of them are secret
(libpq marks them), which values each accepts, which hosts are remote, what datalayer adds for safety
when the user said nothing, and how a URL is split without ever echoing its user-info (the Redis
URL's own rules are in ``_redis_urls``).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlencode

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from datalayer._validators import INT_MAX, check_text
from datalayer.errors import ConfigError

PG_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg"})
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq keywords datalayer sets on every connection itself: a value in the URL would be overridden.
_OWNED = {
    "options": "set STATEMENT_TIMEOUT, LOCK_TIMEOUT and IDLE_IN_TRANSACTION_TIMEOUT instead "
    "(other session settings: ALTER ROLE ... SET)",
    "application_name": "set DATALAYER_APP_NAME instead",
    "connect_timeout": "set CONNECT_TIMEOUT instead",
}
_BOOL = ("0", "1")
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_PROTOCOLS = ("3.0", "3.2", "latest")
# Value sets of the libpq keywords that take one of a few words (libpq checks them only at connect).
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": SSLMODES,
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslcompression": _BOOL,
    "sslsni": _BOOL,
    "keepalives": _BOOL,
    "gssdelegation": _BOOL,
    "ssl_min_protocol_version": _TLS_VERSIONS,
    "ssl_max_protocol_version": _TLS_VERSIONS,
    "min_protocol_version": _PROTOCOLS,
    "max_protocol_version": _PROTOCOLS,
    "replication": ("database", "true", "false", "on", "off", "yes", "no", "1", "0"),
    "gsslib": ("gssapi", "sspi"),
}
_SECONDS = ("keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")
_AUTH_METHODS = ("password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none")
# What datalayer asks of the server's authentication when the user said nothing: never send the
# password in clear (trust, md5 and SCRAM servers still connect).
DEFAULT_REQUIRE_AUTH = "!password"
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")


@functools.cache
def _libpq_options() -> Mapping[str, str]:
    """Every keyword the linked libpq knows, with its display flag."""
    return {
        o.keyword.decode(): (o.dispchar or b"").decode() for o in pq.Conninfo.get_defaults() if o.keyword is not None
    }


@functools.cache
def pg_secret_params() -> frozenset[str]:
    """libpq keywords never shown: those libpq itself hides ('*' secrets, 'D' debug-only such as SCRAM keys)."""
    return frozenset(k for k, flag in _libpq_options().items() if flag in ("*", "D")) | {"password", "sslpassword"}


def is_host(value: str) -> bool:
    """True for a host name (letters, digits, ``-``, ``_`` in dot-separated labels) or an IP literal."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if all(label.isdigit() for label in labels):
        return False  # digits and dots only: an IP address or nothing (999.1.1.1 is no host name)
    return len(value) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def is_socket(value: str) -> bool:
    # A unix-socket directory (absolute path) or a Linux abstract socket name.
    return value[:1] in ("/", "@") and len(value) > 1 and value.isprintable()


def _is_local(value: str) -> bool:
    # Only what never leaves this machine whatever DNS says: a socket, a loopback address, and exactly
    # "localhost" (from /etc/hosts). "localhost." or "LOCALHOST" may be looked up in DNS, so whoever
    # answers DNS would choose the server: remote.
    if is_socket(value) or value == "localhost":
        return True
    try:
        return ipaddress.ip_address(value).is_loopback
    except ValueError:
        return False


def config_error(variable: str, message: str) -> ConfigError:
    return ConfigError(f"{variable} {message}", variable=variable)


def shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def check_port(raw: str, variable: str, *, echo: bool = True) -> str:
    """A port, or a comma-separated list of them (libpq's multi-host form)."""
    for part in raw.split(","):
        text = part.strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
            got = f", got {shown(text)}" if echo else ""
            raise config_error(variable, f"must be a port number between 1 and 65535{got}")
    return ",".join(p.strip() for p in raw.split(","))


def checked_pg_params(
    params: Mapping[str, str], variables: Mapping[str, str] | None = None, default: str = "DatabaseTarget"
) -> dict[str, str]:
    """Validate libpq parameters and add datalayer's safe defaults; ConfigError names the variable.

    Defaults, each only where the parameter is absent: ``require_auth=!password`` (the password never
    leaves the client in clear) and, when any host is remote (not loopback, not a unix socket),
    ``sslmode=verify-full`` (the server proves who it is before anything is sent).
    """
    known = _libpq_options()
    out: dict[str, str] = {}
    for key, value in params.items():
        var = (variables or {}).get(key, default)
        if key not in known:
            raise config_error(var, f"has {key!r}, which is not a libpq connection parameter")
        if key == "password":
            raise config_error(var, "holds the password among the parameters; pass it apart (password=Secret(...))")
        if key in _OWNED:
            raise config_error(var, f"sets {key}, which datalayer sets on every connection; {_OWNED[key]}")
        if not isinstance(value, str) or "\x00" in value:
            raise config_error(var, f"has a {key} that is not text (or holds a NUL character)")
        _check_value(key, value, var)
        out[key] = value
    _check_lists(out, variables or {}, default)
    if "require_auth" not in out and "require_auth" in known:
        out["require_auth"] = DEFAULT_REQUIRE_AUTH
    if "sslmode" not in out and _remote(out):
        out["sslmode"] = "verify-full"
    _libpq_accepts(out, default)
    return out


# A socket path that can never exist (/dev/null is not a directory): connecting there fails at once.
_NOWHERE = "/dev/null"


def _libpq_accepts(params: Mapping[str, str], variable: str) -> None:
    """Let libpq check the combination, offline: it validates its options before it connects.

    Rules between parameters (``sslrootcert=system`` needs ``verify-full``, ``sslnegotiation=direct``
    a strong ``sslmode``, a ``service`` that must exist ...) are libpq's, so libpq decides; the host is
    replaced by a socket that cannot exist, so nothing reaches the network.
    """
    probe = {k: v for k, v in params.items() if k not in ("host", "hostaddr", "port", "gssencmode", "requirepeer")}
    conn = pq.PGconn.connect_start(make_conninfo("", **probe, host=_NOWHERE, port="5432").encode())
    try:
        message = conn.error_message.decode(errors="replace").strip()
    finally:
        conn.finish()
    if message and not message.startswith(f'connection to server on socket "{_NOWHERE}/'):
        raise config_error(variable, f"is refused by libpq: {message.splitlines()[0]}")


def _check_value(key: str, value: str, var: str) -> None:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise config_error(var, f"has {key} {shown(value)}; use one of {', '.join(_CHOICES[key])}")
    elif key in _SECONDS:
        if not (value.isascii() and value.isdigit() and int(value) <= INT_MAX):
            raise config_error(var, f"has {key} {shown(value)}; use a whole number from 0 to {INT_MAX}")
    elif key == "require_auth":
        items = value.split(",")
        negated = {i.startswith("!") for i in items}
        names = [i.removeprefix("!") for i in items]
        if len(negated) != 1 or len(set(names)) != len(names) or not all(n in _AUTH_METHODS for n in names):
            raise config_error(
                var,
                f"has require_auth {shown(value)}; use a comma-separated list of {', '.join(_AUTH_METHODS)}, "
                "all or none prefixed with '!'",
            )
    elif key == "host":
        if not all(is_host(h) or is_socket(h) for h in value.split(",")):
            raise config_error(
                var,
                "must be a host name, an IP address or a socket directory (an absolute path), "
                "or a comma-separated list of them",
            )
    elif key == "hostaddr":
        if not all(_is_ip(h) for h in value.split(",")):
            raise config_error(var, "has a hostaddr that is not an IP address (or a comma-separated list of them)")
    elif key == "port":
        check_port(value, var, echo=False)
    elif not value.isprintable():
        raise config_error(var, f"has a {key} holding control characters")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _check_lists(params: Mapping[str, str], variables: Mapping[str, str], default: str) -> None:
    # libpq pairs hosts, addresses and ports by position: a count it cannot pair fails only at connect.
    hosts = len(params.get("hostaddr", params.get("host", "")).split(","))
    if "host" in params and "hostaddr" in params and len(params["host"].split(",")) != hosts:
        raise config_error(variables.get("hostaddr", default), "must list as many addresses as there are hosts")
    if "port" in params and len(params["port"].split(",")) not in (1, hosts):
        raise config_error(variables.get("port", default), "must be one port, or one port per host")


def _remote(params: Mapping[str, str]) -> bool:
    # The address connected to is hostaddr when given (host then only names the certificate).
    where = params.get("hostaddr") or params.get("host")
    if not where:
        return "service" in params  # a service file may name any host: assume it is remote
    return not all(_is_local(h) for h in where.split(","))


def check_userinfo(url: str, variable: str) -> str:
    """The part after ``scheme://``, refused when a user name or password holds an unencoded separator.

    Such a URL splits in the wrong place and pieces of the password would become the host, port or
    database; the error says so without repeating any of it.
    """
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[end:] or rest[:end].count("@") > 1:
        raise config_error(
            variable,
            "has an '@' after the host: percent-encode '/', '?', '#' and '@' in the user name and password "
            "(urllib.parse.quote(password, safe='')), and '@' anywhere else",
        )
    return rest


def scheme_of(url: str, schemes: frozenset[str], variable: str, example: str) -> str:
    """The URL's scheme, lower-cased, or ConfigError (which shows it only if it looks like a scheme)."""
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in schemes:
        return scheme.lower()
    shown = repr(scheme) if sep and _SCHEME.fullmatch(scheme) else "(none)" if not sep else "(invalid)"
    raise config_error(variable, f"has scheme {shown}; use {example}")


def parse_database_url(url: str, variable: str = "DATABASE_URL") -> tuple[dict[str, str], str | None]:
    """libpq parameters and the password from a postgresql:// URL (parameters not yet checked)."""
    check_text(variable, url)
    scheme_of(url, PG_SCHEMES, variable, "postgresql://user:password@host:port/dbname")
    rest = check_userinfo(url, variable)
    base, _, query = rest.partition("?")
    parsed, named = _libpq_uri(rest), _libpq_uri(base)
    if parsed is None or named is None:
        raise config_error(
            variable,
            "is not a valid PostgreSQL URL; expected postgresql://user:password@host:port/dbname "
            "(percent-encode special characters in the password, and use only libpq's parameter names)",
        )
    # libpq keeps the last of a parameter given twice: a later ?sslmode=disable would quietly undo an
    # earlier verify-full. Names only: libpq has accepted every one of them as its own keyword.
    keys = [_URI_ALIASES.get(k, k) for k in (unquote(p.partition("=")[0]) for p in query.split("&") if p)]
    twice = sorted({k for k in keys if keys.count(k) > 1} | (set(keys) & {k for k, v in named.items() if v}))
    if twice:
        raise config_error(
            variable, f"gives {', '.join(twice)} twice (in the query, or in the query and the URL); keep one"
        )
    params = {k: str(v) for k, v in parsed.items() if v is not None}
    return params, params.pop("password", None)


def split_database_urls(raw: str, variable: str) -> list[str]:
    """The URLs of a comma-separated list (DATABASE_REPLICA_URLS), each refused by its position when empty.

    Split only before a scheme: a multi-host URL (``postgresql://a:5432,b:5432/db``) keeps its commas.
    """
    urls = [u.strip() for u in re.split(r",(?=\s*postgres(?:ql)?(?:\+psycopg)?://)", raw, flags=re.I)]
    for i, url in enumerate(urls, 1):
        if not url or url.startswith(",") or url.endswith(","):
            raise config_error(
                variable, f"entry {i} is empty or has a stray comma; separate the URLs with single commas"
            )
    return urls


# libpq's URI query aliases: ?ssl=true means sslmode=require (JDBC's spelling).
_URI_ALIASES = {"ssl": "sslmode"}


def _libpq_uri(rest: str) -> dict[str, object] | None:
    try:
        return dict(conninfo_to_dict("postgresql://" + rest))
    except psycopg.ProgrammingError:
        return None  # libpq's message may quote the URL, password included: the caller raises without it


def netloc(host: str, port: int | str | None) -> str:
    """``host[:port]`` for a URL, an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{port}" if port not in (None, "") else shown


def pg_display(params: Mapping[str, str], has_password: bool) -> str:
    """A postgresql:// URL for humans and logs: every secret parameter masked, parts escaped."""
    secrets = pg_secret_params()
    p = {k: ("***" if k in secrets else v) for k, v in params.items()}
    host, port = p.pop("host", ""), p.pop("port", "")
    user, dbname = p.pop("user", ""), p.pop("dbname", "")
    auth = f"{quote(user, safe='')}{':***' if has_password else ''}@" if user or has_password else ""
    if is_socket(host) or "," in host:  # socket directories and host lists go in the query, as libpq allows
        p["host"] = host
        if port:
            p["port"] = port
        where = ""
    else:
        where = netloc(host, port) if host else ""
    query = urlencode(sorted(p.items()), safe="/!*,:")
    return f"postgresql://{auth}{where}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def pg_repr(params: Mapping[str, str]) -> str:
    """repr of libpq parameters with secret values masked."""
    secrets = pg_secret_params()
    return repr({k: ("***" if k in secrets else v) for k, v in params.items()})
