"""Where settings come from: the process environment over a ``.env`` file, and the one rule for their text.

The environment wins over the file by group: when the environment sets any variable of the database
group, the file's database variables are ignored (a DATABASE_URL in the file must not replace the
DATABASE_HOST the environment chose, nor lend it a password); likewise for the Redis group. Other
variables are taken one by one.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv.parser import parse_stream

from datalayer._validators import check_text
from datalayer.errors import ConfigError

DATABASE_PARTS = ("DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD")
DATABASE_VARIABLES = ("DATABASE_URL", *DATABASE_PARTS, "DATABASE_SSLMODE")
# Where a transaction pooler (PgBouncer) sits: read with the database group, never a target by themselves.
DATABASE_ROUTING = ("DATABASE_POOLER", "DATABASE_DIRECT_URL")
# Streaming replicas of that database (connection(replica=True)): with the database group too, since a
# .env replica list must not outlive the environment's choice of another primary.
DATABASE_REPLICAS = ("DATABASE_REPLICA_URLS",)
REDIS_PARTS = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD")
REDIS_VARIABLES = ("REDIS_URL", *REDIS_PARTS)
# Whether that Redis is a seed node of a Redis Cluster: read with the Redis group, never a target by itself.
REDIS_MODE = ("REDIS_CLUSTER",)
# Every variable Settings.from_env() reads (DATALAYER_DOTENV decides where they come from).
VARIABLES = (
    *DATABASE_VARIABLES,
    *DATABASE_ROUTING,
    *DATABASE_REPLICAS,
    "REPLICA_MAX_LAG",
    "REPLICA_WAIT",
    *REDIS_VARIABLES,
    *REDIS_MODE,
    "POOL_SIZE",
    "MAX_OVERFLOW",
    "POOL_MIN_SIZE",
    "POOL_TIMEOUT",
    "POOL_RECYCLE",
    "STATEMENT_TIMEOUT",
    "LOCK_TIMEOUT",
    "IDLE_IN_TRANSACTION_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DATALAYER_APP_NAME",
    "DATALAYER_EMBEDDED",
    "DATALAYER_HOME",
    "CACHE_PREFIX",
    "DATALAYER_APP_PASSWORD",
    "DATALAYER_READONLY_PASSWORD",
)
_GROUPS = ((*DATABASE_VARIABLES, *DATABASE_ROUTING, *DATABASE_REPLICAS), (*REDIS_VARIABLES, *REDIS_MODE))
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")
# The name a .env statement starts with, to say which setting a line python-dotenv could not parse holds.
_KEY = re.compile(r"(?:export[^\S\r\n]+)?([A-Za-z_][A-Za-z0-9_.]*)[^\S\r\n]*=")


def variables(source: Mapping[str, object]) -> dict[str, str]:
    """The variables Settings.from_env() reads, each checked as text; an empty value means unset."""
    return {name: value for name in VARIABLES if name in source and (value := check_text(name, source[name]))}


def environment() -> Mapping[str, str]:
    """The process environment over ``.env`` of the working directory (unless DATALAYER_DOTENV=0)."""
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
        # utf-8-sig: an editor's byte-order mark must not hide the first variable.
        with path.open(encoding="utf-8-sig") as stream:
            values = _parse(path, stream.read())
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read {path} ({type(e).__name__}); fix it, or set DATALAYER_DOTENV=0 to ignore it",
            variable="DATALAYER_DOTENV",
        ) from None
    for group in _GROUPS:
        if any(os.environ.get(name) for name in group):
            values = {k: v for k, v in values.items() if k not in group}
    return {**values, **os.environ}


def _parse(path: Path, text: str) -> dict[str, str]:
    # python-dotenv's dotenv_values() only logs a line it cannot parse and maps a bare NAME to None,
    # without the line: both would silently mean "not set" (and an embedded fallback). Its parser
    # reports each statement with where it starts and whether it failed.
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        original = binding.original.string
        statement = original.lstrip()
        # The statement's own line, not that of the blank lines python-dotenv counts as part of it.
        line = binding.original.line + original[: len(original) - len(statement)].count("\n")
        if binding.error:
            key = _KEY.match(statement)
            name = key.group(1) if key else None
            raise ConfigError(
                f"{path} line {line}{f' ({name})' if name else ''} cannot be parsed (an unterminated quote?); "
                "fix it, or set DATALAYER_DOTENV=0 to ignore the file",
                variable=name if name in VARIABLES else "DATALAYER_DOTENV",
            )
        name = binding.key
        if name is None or name not in VARIABLES:
            continue  # comments, blank lines and other programs' variables
        if binding.value is None:
            raise ConfigError(
                f"{path} line {line}: {name} has no '='; write {name}=value, or remove the line", variable=name
            )
        if name in lines:
            raise ConfigError(f"{path} sets {name} twice (lines {lines[name]} and {line}); keep one", variable=name)
        values[name], lines[name] = binding.value, line
    return values
