"""The circuit breaker of the Redis layer, shared by the sync and the async cache.

Its methods never wait for I/O: a thread lock held for a few instructions serves threads and tasks alike.
"""

from __future__ import annotations

import threading
import time

import redis

from datalayer import tracing

__all__ = ["Breaker", "rejected"]


class Breaker:
    """closed → (a failure) → open for ``cooldown`` s → half-open (one probe) → closed or open again.

    With ``calls_probe`` False no call probes: the breaker stays open until ``success()`` is called by
    whoever checks the whole service (the Redis Cluster prober pings every master).
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "calls_probe",
        "changes",
        "cooldown",
        "failures",
        "opened",
        "opened_at",
        "state",
    )

    def __init__(self, cooldown: float, *, calls_probe: bool = True) -> None:
        self.cooldown = cooldown
        self.calls_probe = calls_probe
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
        if not self.calls_probe:
            return False
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


# Answers of a Redis that is up but cannot serve the call now (a slot moving, a node failing over or
# loading, a script running): an outage like a timeout.
_TRANSIENT = (
    redis.exceptions.AskError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)
_TRANSIENT_PREFIXES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK")


def rejected(error: BaseException) -> bool:
    """Whether Redis answered ``error`` for the call itself (a script's CROSSSLOT, WRONGTYPE, NOPERM): the
    same call would fail again, so it says nothing about Redis being up; the breaker must not open on it."""
    if not isinstance(error, redis.exceptions.ResponseError) or isinstance(error, _TRANSIENT):
        return False
    return not str(error).startswith(_TRANSIENT_PREFIXES)
