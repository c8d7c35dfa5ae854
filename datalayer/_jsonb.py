"""JSON text for jsonb columns: orjson, with large floats spelled so that PostgreSQL keeps them floats.

jsonb stores numbers as ``numeric``, which drops the exponent: orjson writes 9.048052627016022e16
(``e+16`` since orjson 3.11.7), PostgreSQL stores and returns 90480526270160220, and that reads back
as an int that is not equal to the float that was written. Spelled out in full with one decimal
(90480526270160224.0) the number keeps its scale and reads back as the same float. Only floats of
magnitude 1e16 and above are written with a positive exponent; smaller ones and negative exponents
come back unchanged.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

__all__ = ["dumps"]

_POSITIVE_EXPONENT = re.compile(rb"[0-9]e\+?[0-9]")


def dumps(value: Any) -> bytes:
    """``orjson.dumps(value)``, with every float of magnitude >= 1e16 written without an exponent."""
    data = orjson.dumps(value)
    if _POSITIVE_EXPONENT.search(data) is None:  # the common case: one regex scan, no walk
        return data
    return orjson.dumps(_spelled_out(value))


def _spelled_out(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= 1e16:
            return orjson.Fragment(f"{value:.1f}".encode())
        return value
    if isinstance(value, dict):
        return {k: _spelled_out(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_spelled_out(v) for v in value]
    return value
