"""Attrs validators and converters for settings: each raises ConfigError naming the variable."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from datalayer.errors import ConfigError

# PostgreSQL's timeouts are int milliseconds; a bare number means milliseconds.
_DURATION = re.compile(r"^\s*([0-9]+)\s*(us|ms|s|min|h|d)?\s*$")
_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
INT_MAX = 2**31 - 1
# C0 and C1 control characters (libpq stops a string at NUL; a line break or an escape changes what a
# value means) and lone surrogates (undecodable bytes, which no C library can be handed).
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_text(variable: str, value: object) -> str:
    """``value`` if it is a str without control characters or lone surrogates, else ConfigError.

    The error names the variable and the offending code point, never the value (it may be a secret).
    """
    if not isinstance(value, str):
        raise ConfigError(
            f"{variable} must be text, as in the environment, got {type(value).__name__}", variable=variable
        )
    bad = _NOT_TEXT.search(value)
    if bad is not None:
        raise ConfigError(
            f"{variable} holds a control character or an undecodable byte (U+{ord(bad.group()):04X}), "
            "which would cut or change the value; remove it",
            variable=variable,
        )
    return value


def matches(variable: str, test: Callable[[Any], bool], rule: str) -> Callable[[Any, Any, Any], None]:
    """A validator: ``test(value)`` or ConfigError saying ``variable must be rule``."""

    def check(_: Any, __: Any, value: Any) -> None:
        if not test(value):
            raise ConfigError(f"{variable} must be {rule}", variable=variable)

    return check


def optional(variable: str, kind: type) -> Callable[[Any, Any, Any], None]:
    """A validator: None or an instance of ``kind``."""
    return matches(variable, lambda v: v is None or isinstance(v, kind), f"a {kind.__name__} or None")


def duration_ms(value: str) -> float:
    """Milliseconds of a duration already normalised by ``duration`` ("30s", "500ms"; "0ms" disables)."""
    m = _DURATION.match(value)
    if m is None:
        raise ValueError(f"not a normalised duration: {value!r}")
    return int(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]


def duration(variable: str, value: Any) -> str:
    """A PostgreSQL duration (a bare number means ms) within its int-milliseconds range, normalised."""
    m = _DURATION.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(
            f"{variable} must be a duration such as 500ms, 30s or 5min (0 disables), got {value!r}",
            variable=variable,
        )
    amount, unit = int(m.group(1)), m.group(2) or "ms"
    ms = amount * _UNIT_MS[unit]
    if ms > INT_MAX or 0 < ms < 1:  # below 1 ms PostgreSQL rounds to 0, which disables the timeout
        raise ConfigError(
            f"{variable} must be 0 (disabled) or from 1ms to {INT_MAX}ms (about 24 days), got {value!r}",
            variable=variable,
        )
    return f"{amount}{unit}"


def statement_timeout(value: Any) -> str:
    """STATEMENT_TIMEOUT, checked."""
    return duration("STATEMENT_TIMEOUT", value)


def lock_timeout(value: Any) -> str:
    """LOCK_TIMEOUT, checked."""
    return duration("LOCK_TIMEOUT", value)


def idle_timeout(value: Any) -> str:
    """IDLE_IN_TRANSACTION_TIMEOUT, checked."""
    return duration("IDLE_IN_TRANSACTION_TIMEOUT", value)


def whole(
    variable: str, minimum: int, maximum: Callable[[Any], int], note: str = ""
) -> Callable[[Any, Any, Any], None]:
    """A validator: an int (not a bool) from ``minimum`` to ``maximum(instance)``."""

    def check(instance: Any, _: Any, value: Any) -> None:
        top = maximum(instance)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= top:
            raise ConfigError(
                f"{variable} must be a whole number from {minimum} to {top}{note}, got {value!r}", variable=variable
            )

    return check


_SIZE = re.compile(r"^\s*([0-9]+)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.I)


def byte_size(variable: str, raw: str) -> int:
    """A number of bytes: a bare number, or with PostgreSQL's units (kB, MB, GB, TB: powers of 1024)."""
    m = _SIZE.match(raw)
    if m is None:
        raise ConfigError(
            f"{variable} must be a number of bytes such as 1048576, 512kB or 16MB, got {raw!r}", variable=variable
        )
    unit = (m.group(2) or "b").lower()
    return int(m.group(1)) << (10 * "bkmgt".index(unit[0]))


def seconds(variable: str) -> Callable[[Any, Any, Any], None]:
    """A validator: a finite, positive number of seconds below 10**7."""

    def check(_: Any, __: Any, value: Any) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not (ok and 0 < value < 10**7):
            raise ConfigError(f"{variable} must be a positive number of seconds, got {value!r}", variable=variable)

    return check
