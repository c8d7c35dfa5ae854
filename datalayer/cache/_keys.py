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
from datalayer.repos._common import json_text
from datalayer.repos.cache_entries import MAX_KEY_CHARS
from datalayer.text import check_text

__all__ = ["MAX_KEY_CHARS", "Keys", "check_key", "escape", "version_key"]

_SAFE = re.compile(r"[A-Za-z0-9_.\-/]")
MAX_ID_CHARS = 200
# Every layer holds a key of at most MAX_KEY_CHARS (the cache_entries CHECK): an escaped part of at most
# MAX_ESCAPED_CHARS, with a CACHE_PREFIX of at most 64 and the longest kind, always fits.
MAX_ESCAPED_CHARS = 400


def check_key(key: object) -> str:
    """A cache key every layer can hold (the text rule, 1 to MAX_KEY_CHARS), or ValidationError."""
    return check_text(key, "key", min_chars=1, max_chars=MAX_KEY_CHARS)


def escape(part: object, name: str = "id") -> str:
    """An id or endpoint as a key part: safe characters kept, anything else %-encoded (injective)."""
    if isinstance(part, bool) or not isinstance(part, int | str):
        raise ValidationError({name: "must be an int or a string"})
    text = check_text(str(part), name, min_chars=1, max_chars=MAX_ID_CHARS)
    escaped = "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)
    if len(escaped) > MAX_ESCAPED_CHARS:
        raise ValidationError({name: f"must be at most {MAX_ESCAPED_CHARS} characters once %-escaped"})
    return escaped


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
        # The JSON-column rules first: orjson alone writes NaN and infinity as null, so that
        # {"q": nan} and {"q": None} would be one request.
        json_text(request, "request", require_object=False)
        normal = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.sha256(ep.encode() + b"\0" + str(generation).encode() + b"\0" + normal).hexdigest()[:32]
        return f"{self.prefix}:api:{ep}:{{{digest}}}"

    def api_generation(self, endpoint: object) -> str:
        return f"{self.prefix}:gen:api:{escape(endpoint, 'endpoint')}"

    def api_prefix_of(self, generation_key: str) -> str:
        """The prefix of every key of the endpoint whose generation counter is ``generation_key``."""
        return f"{self.prefix}:api:{generation_key.rsplit(':', 1)[-1]}:"

    def global_generation(self) -> str:
        return f"{self.prefix}:gen"

    def channel(self) -> str:
        return f"{self.prefix}:invalidate"

    def lock(self, key: str) -> str:
        return key + ":lock" if "{" in key else "{" + key + "}:lock"
