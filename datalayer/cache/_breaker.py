"""The circuit breaker of the Redis layer, shared by the sync and the async cache.

Its methods never wait for I/O: a thread lock held for a few instructions serves threads and tasks alike.
"""

from __future__ import annotations

import threading
import time

from datalayer import tracing

__all__ = ["Breaker"]


class Breaker:
    """closed → (a failure) → open for ``cooldown`` s → half-open (one probe) → closed or open again."""

    __slots__ = ("__weakref__", "_lock", "changes", "cooldown", "failures", "opened", "opened_at", "state")

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.state = "closed"
        self.opened_at = 0.0
        self.failures = 0
        self.opened = 0
        # Counted under the lock with each change: tracers (called after the lock is released, so one
        # may use the cache) learn the order of changes that threads report in any order.
        self.changes = 0
        self._lock = threading.Lock()
        tracing.breaker_created(self)  # its state is read when observed (datalayer.otel's gauge)

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        with self._lock:
            probe = self.state == "open" and time.monotonic() - self.opened_at >= self.cooldown
            if probe:
                self.state = "half-open"
                self.changes += 1
            sequence = self.changes
        if probe:  # this caller probes
            tracing.breaker_changed("half-open", "open", sequence)
        return probe

    def success(self) -> bool:
        """Record a success; True when it ends an outage."""
        if self.state == "closed":
            self.failures = 0
            return False
        with self._lock:
            previous = self.state
            self.state = "closed"
            self.failures = 0
            if previous != "closed":
                self.changes += 1
            sequence = self.changes
        tracing.breaker_changed("closed", previous, sequence)
        return previous != "closed"

    def failure(self) -> None:
        with self._lock:
            previous = self.state
            self.failures += 1
            if self.state != "open":
                self.opened += 1
                self.changes += 1
            self.state = "open"
            self.opened_at = time.monotonic()
            sequence = self.changes
        tracing.breaker_changed("open", previous, sequence)
