"""The key scheme, under a configurable prefix (CACHE_PREFIX, default ``dl``).

``user:{id}``, ``user_analyses:{id}``, ``analysis_result:{id}``, ``tool_generation:{id}``,
``system_stats`` and ``api:{endpoint}:{hash}``. The braces are Redis Cluster hash tags: every key of a
user shares the user's slot, and an API key is tagged on its own request hash so that one busy
endpoint is not one hot slot. Ids and endpoints are escaped so that hostile input can neither break
out of a tag nor collide with another key.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from datalayer.errors import ValidationError

__all__ = ["Keys", "escape", "version_key"]

_SAFE = re.compile(r"[A-Za-z0-9_.\-/]")
MAX_ID_CHARS = 200


def escape(part: object, name: str = "id") -> str:
    """An id or endpoint as a key part: safe characters kept, anything else %-encoded (injective)."""
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise ValidationError({name: "must be an int or a string"})
    text = str(part)
    if not text or len(text) > MAX_ID_CHARS:
        raise ValidationError({name: f"must be 1 to {MAX_ID_CHARS} characters"})
    return "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)


def version_key(key: str) -> str:
    """The version counter of ``key``, in the same Redis Cluster slot."""
    if "{" in key:
        return key + ":ver"
    return "{" + key + "}:ver"


class Keys:
    """Builds every key under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def user(self, user_id: object) -> str:
        return f"{self.prefix}:user:{{{escape(user_id, 'user_id')}}}"

    def user_analyses(self, user_id: object) -> str:
        return f"{self.prefix}:user_analyses:{{{escape(user_id, 'user_id')}}}"

    def analysis_result(self, analysis_id: object) -> str:
        return f"{self.prefix}:analysis_result:{{{escape(analysis_id, 'analysis_id')}}}"

    def tool_generation(self, generation_id: object) -> str:
        return f"{self.prefix}:tool_generation:{{{escape(generation_id, 'generation_id')}}}"

    def system_stats(self) -> str:
        return f"{self.prefix}:system_stats"

    def api(self, endpoint: object, request: Any, generation: int) -> str:
        """``api:{endpoint}:{hash}``; the hash covers the normalised request and the endpoint's generation."""
        ep = escape(endpoint, "endpoint")
        try:
            normal = orjson.dumps(request, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            raise ValidationError({"request": "must be JSON-serialisable"}) from None
        digest = hashlib.sha256(ep.encode() + b"\0" + str(generation).encode() + b"\0" + normal).hexdigest()[:32]
        return f"{self.prefix}:api:{ep}:{{{digest}}}"

    def api_generation(self, endpoint: object) -> str:
        return f"{self.prefix}:gen:api:{escape(endpoint, 'endpoint')}"

    def global_generation(self) -> str:
        return f"{self.prefix}:gen"

    def channel(self) -> str:
        return f"{self.prefix}:invalidate"

    def lock(self, key: str) -> str:
        return key + ":lock" if "{" in key else "{" + key + "}:lock"
