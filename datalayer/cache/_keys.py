"""The key scheme, under a configurable prefix (CACHE_PREFIX, default ``dl``).

``user:{id}``, ``user_analyses:{id}``, ``analysis_result:{id}``, ``tool_generation:{id}``,
``system_stats`` and ``api:{endpoint}:{hash}``. The braces are Redis Cluster hash tags: every key of a
user shares the user's slot, and an API key is tagged on its own request hash so that one busy
endpoint is not one hot slot. Ids and endpoints are escaped so that hostile input can neither break
out of a tag nor collide with another key.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from typing import Any

import orjson

from datalayer.errors import ValidationError
from datalayer.repos._common import json_text
from datalayer.repos.cache_entries import MAX_KEY_CHARS
from datalayer.text import check_text

__all__ = ["MAX_KEY_CHARS", "Keys", "check_key", "companion", "escape", "hash_slot", "version_key"]

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


def hash_slot(key: str) -> int:
    """The Redis Cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, the text between its first
    ``{`` and the first ``}`` after it when that text is not empty, else of the whole key."""
    data = key.encode("utf-8")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) & 16383


def _has_tag(key: str) -> bool:
    start = key.find("{")
    return start >= 0 and key.find("}", start + 1) > start + 1


def _slot_basis() -> dict[int, tuple[int, int]]:
    # CRC16 without an initial or final xor is linear over equal-length messages: the CRC of a tag of
    # _TAG_CHARS '0's with some turned to '1' (bit 0 of their byte) is the base's xor those bytes'.
    basis: dict[int, tuple[int, int]] = {}
    for position in range(_TAG_CHARS):
        vector = binascii.crc_hqx(bytes(position) + b"\x01" + bytes(_TAG_CHARS - 1 - position), 0) & 16383
        chosen = 1 << position
        for bit in sorted(basis, reverse=True):
            if vector >> bit & 1:
                vector ^= basis[bit][0]
                chosen ^= basis[bit][1]
        if vector:
            basis[vector.bit_length() - 1] = (vector, chosen)
    return basis


_TAG_CHARS = 16
_BASIS = _slot_basis()


def _slot_tag(slot: int) -> str:
    """A tag of ``_TAG_CHARS`` '0's and '1's that hashes to ``slot``, solved for (a few xors)."""
    want = (binascii.crc_hqx(b"0" * _TAG_CHARS, 0) ^ slot) & 16383
    chosen = 0
    for bit in sorted(_BASIS, reverse=True):
        if want >> bit & 1:
            want ^= _BASIS[bit][0]
            chosen ^= _BASIS[bit][1]
    return "".join("1" if chosen >> position & 1 else "0" for position in range(_TAG_CHARS))


def companion(key: str, suffix: str) -> str:
    """The name of a key that goes with ``key`` (its version counter, its loader lock): always in the
    same Redis Cluster slot, so that a script may take both. A key with a hash tag keeps it (the suffix
    comes after it); one without is hashed whole, so its companion is tagged with the whole key, or, when
    the key holds a ``}`` (no tag can hold one), with a tag of the same slot followed by the key."""
    if _has_tag(key):
        return f"{key}:{suffix}"
    if "}" not in key:
        return f"{{{key}}}:{suffix}"
    return f"{{{_slot_tag(hash_slot(key))}}}{key}:{suffix}"


def version_key(key: str) -> str:
    """The version counter of ``key``, in the same Redis Cluster slot."""
    return companion(key, "ver")


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
        return companion(key, "lock")
