"""The few primitives whose async and sync forms differ in more than ``async``/``await``.

``tools/async_to_sync.py`` renames each async name here (``asleep``, ``ALock``, …) to its sync twin
(``sleep``, ``Lock``, …) when it generates a sync module from its ``*_async.py`` source: this module
is the only hand-kept pair, the model being psycopg's ``_acompat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = [
    "AAPI",
    "API",
    "AEvent",
    "AHook",
    "AJob",
    "ALock",
    "AProducer",
    "ARLock",
    "AShared",
    "ASignal",
    "AThunk",
    "Event",
    "Hook",
    "Job",
    "Lock",
    "Producer",
    "RLock",
    "Shared",
    "Signal",
    "Thunk",
    "ablocking",
    "acall_hook",
    "acurrent_owner",
    "aproduce",
    "asleep",
    "aspawn",
    "blocking",
    "call_hook",
    "current_owner",
    "produce",
    "sleep",
    "spawn",
]

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C")

Lock = threading.Lock
ALock = asyncio.Lock
Event = threading.Event
AEvent = asyncio.Event
sleep = time.sleep
asleep = asyncio.sleep

# A hook run after COMMIT or ROLLBACK: sync code takes plain callables; async code also awaits what
# a hook returns when it is awaitable (an ``async def`` hook).
Hook = Callable[[], object]
AHook = Callable[[], object]

# A function of a connection: sync code gets its value, async code awaits it (run_in_transaction's
# ``fn``, the pool's ``configure``). ``Job[Conn, T]``.
Job = Callable[[C], T]
AJob = Callable[[C], Awaitable[T]]


def blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run CPU-bound or blocking ``fn`` (argon2, a file read): in sync code, right here."""
    return fn(*args, **kwargs)


async def ablocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run CPU-bound or blocking ``fn`` in a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def call_hook(hook: Hook) -> None:
    hook()


async def acall_hook(hook: AHook) -> None:
    result: Any = hook()
    if inspect.isawaitable(result):
        await result


def spawn(fn: Callable[[], object], *, name: str) -> None:
    """Run ``fn`` in the background, in a daemon thread (a pool's purge of dead idle connections)."""
    threading.Thread(target=fn, name=name, daemon=True).start()


# Tasks started by aspawn: the loop keeps only a weak reference to a task, so one nobody holds could
# be collected before it ends.
_background: set[asyncio.Task[object]] = set()


def aspawn(fn: Callable[[], Coroutine[Any, Any, object]], *, name: str) -> None:
    """Run ``fn()`` in the background, as a task of the running event loop (held until it ends)."""
    task = asyncio.get_running_loop().create_task(fn(), name=name)
    _background.add(task)
    task.add_done_callback(_background.discard)


def current_owner() -> object:
    """Who runs a transaction, for refusing a second one on the same connection: nobody in sync code
    (a connection may pass between threads, e.g. a FastAPI dependency and its handler)."""
    return None


def acurrent_owner() -> object:
    """Who runs a transaction: the asyncio task (tasks sharing one connection would interleave)."""
    return asyncio.current_task()


# Where a caller gets the connection type a function wants (for error messages).
API = "datalayer"
AAPI = "datalayer.aio"


# -- the cache's pairs (H-cache) --

# A function of no argument: ``Thunk[T]`` gives a T, ``AThunk[T]`` an awaitable of one.
Thunk = Callable[[], T]
AThunk = Callable[[], Awaitable[T]]
# A function of no argument whose value is wanted (a cache loader): async code also takes a plain one.
Producer = Callable[[], T]
AProducer = Callable[[], Awaitable[T] | T]


def produce(fn: Producer[T]) -> T:
    return fn()


async def aproduce(fn: AProducer[T]) -> T:
    """``fn()``'s value, awaited when ``fn`` is an ``async def`` (or returns an awaitable)."""
    value = fn()
    if inspect.isawaitable(value):
        return await value
    return value


# threading.Event's ``wait(timeout) -> bool``, for tasks: asyncio.Event.wait takes no timeout.
Signal = threading.Event


class ASignal:
    """An asyncio.Event whose ``wait`` takes a timeout and says whether it is set, as threading.Event's."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        if not self._event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._event.wait()
        return self._event.is_set()


# A lock its holder may take again, with a bounded ``acquire(timeout=...) -> bool``.
RLock = threading.RLock


class ARLock:
    """threading.RLock for tasks: the task holding it may take it again (a call that re-enters the code
    holding it), and ``acquire(timeout=...)`` gives up after ``timeout`` seconds, returning False."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    async def acquire(self, timeout: float = -1) -> bool:
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            self._depth += 1
            return True
        try:
            async with asyncio.timeout(None if timeout < 0 else timeout):
                await self._lock.acquire()
        except TimeoutError:
            return False
        self._owner, self._depth = task, 1
        return True

    def release(self) -> None:
        if self._depth <= 0 or self._owner is not asyncio.current_task():
            raise RuntimeError("cannot release a lock this task does not hold")
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()


class Shared(Generic[T]):
    """One process-wide ``T`` (the process's cache), built on first use; a forked child builds its own."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self, build: Callable[[], T]) -> T:
        item = self._item
        if item is not None and self._pid == os.getpid():
            return item
        with self._lock:
            item = self._item
            if item is None or self._pid != os.getpid():
                item = self._item = build()
                self._pid = os.getpid()
            return item

    def replace(self, item: T | None) -> T | None:
        """Install ``item`` (None: build one on next use); returns the previous one, not closed."""
        with self._lock:
            previous = self._item if self._pid == os.getpid() else None
            self._item, self._pid = item, os.getpid()
        return previous

    def take(self) -> T | None:
        """Forget the current one and return it for closing (None when there is none of this process)."""
        with self._lock:
            item, self._item = self._item, None
        return item if self._pid == os.getpid() else None


class AShared(Generic[T]):
    """``Shared`` for asyncio: one ``T`` per event loop (async clients serve only the loop they were
    made in). One made before any loop runs (at import) belongs to the first loop that asks."""

    def __init__(self) -> None:
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self._outside: T | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _slot(self) -> asyncio.AbstractEventLoop | None:
        if self._pid != os.getpid():  # a forked child: the parent's loops and clients are not ours
            self._items, self._outside, self._pid = weakref.WeakKeyDictionary(), None, os.getpid()
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return None

    def get(self, build: Callable[[], T]) -> T:
        with self._lock:
            loop = self._slot()
            if loop is None:
                if self._outside is None:
                    self._outside = build()
                return self._outside
            item = self._items.get(loop)
            if item is None:
                item, self._outside = (self._outside, None) if self._outside is not None else (build(), None)
                self._items[loop] = item
            return item

    def replace(self, item: T | None) -> T | None:
        """Install ``item`` for the running loop (None: build one on next use); returns the previous one."""
        with self._lock:
            loop = self._slot()
            if loop is None:
                previous, self._outside = self._outside, item
                return previous
            previous = self._items.pop(loop, None)
            if item is not None:
                self._items[loop] = item
            return previous

    def take(self) -> T | None:
        """Forget the running loop's one and return it for closing."""
        return self.replace(None)
