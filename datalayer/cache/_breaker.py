"""The circuit breaker of the Redis layer, shared by the sync and the async cache.

Its methods never wait for I/O: a thread lock held for a few instructions serves threads and tasks alike.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Breaker"]


class Breaker:
    """closed → (a failure) → open for ``cooldown`` s → half-open (one probe) → closed or open again."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.state = "closed"
        self.opened_at = 0.0
        self.failures = 0
        self.opened = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        with self._lock:
            if self.state == "open" and time.monotonic() - self.opened_at >= self.cooldown:
                self.state = "half-open"
                return True  # this caller probes
            return False

    def success(self) -> bool:
        """Record a success; True when it ends an outage."""
        if self.state == "closed":
            self.failures = 0
            return False
        with self._lock:
            recovered = self.state != "closed"
            self.state = "closed"
            self.failures = 0
            return recovered

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state != "open":
                self.opened += 1
            self.state = "open"
            self.opened_at = time.monotonic()
