"""The in-process layer: a bounded LRU with per-entry expiry, safe across threads."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

__all__ = ["L1"]


class L1:
    """At most ``size`` entries, each for at most ``max_ttl`` seconds (the bound on serving a value
    that another process invalidated while pub/sub messages could not reach us)."""

    def __init__(self, size: int, max_ttl: float) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[bool, Any]:
        """(found, value)."""
        if not self.size:
            return False, None
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return False, None
            if item[0] < time.monotonic():
                del self._data[key]
                return False, None
            self._data.move_to_end(key)
            return True, item[1]

    def put(self, key: str, value: Any, ttl: float) -> None:
        if not self.size:
            return
        expires = time.monotonic() + min(ttl, self.max_ttl)
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    def delete_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k.startswith(prefix)]:
                del self._data[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
