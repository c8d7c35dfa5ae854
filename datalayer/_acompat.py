"""The few primitives whose async and sync forms differ in more than ``async``/``await``.

``tools/async_to_sync.py`` renames each async name here (``asleep``, ``ALock``, …) to its sync twin
(``sleep``, ``Lock``, …) when it generates a sync module from its ``*_async.py`` source: this module
is the only hand-kept pair, the model being psycopg's ``_acompat.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = [
    "AEvent",
    "AHook",
    "ALock",
    "Event",
    "Hook",
    "Lock",
    "ablocking",
    "acall_hook",
    "asleep",
    "blocking",
    "call_hook",
    "sleep",
]

P = ParamSpec("P")
T = TypeVar("T")

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
