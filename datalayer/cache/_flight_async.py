"""One loader per key: single-flight within the process (callers wait for the leader's result)."""

from __future__ import annotations

from typing import Any, TypeVar

from datalayer._acompat import ALock, ASignal, AThunk

__all__ = ["Flights"]

T = TypeVar("T")


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = ASignal()
        self.value: Any = None
        self.error: BaseException | None = None


class Flights:
    """``run(key, lead, fallback, wait)``: the first caller for ``key`` runs ``lead()``; callers that
    arrive meanwhile wait up to ``wait`` seconds for its result, and run ``fallback()`` when it failed
    or took too long (a loader that hangs must not hang every caller of the key)."""

    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self._lock = ALock()

    async def run(self, key: str, lead: AThunk[T], fallback: AThunk[T], wait: float) -> T:
        async with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if await flight.done.wait(wait) and flight.error is None:
                return flight.value  # type: ignore[no-any-return]
            return await fallback()
        try:
            value = await lead()
            flight.value = value
            return value
        except BaseException as e:
            flight.error = e
            raise
        finally:
            flight.done.set()
            async with self._lock:
                self._flights.pop(key, None)
