"""Misuses of ``datalayer.fastapi``'s dependencies a route can only show at request time, found once per
route by walking its dependency tree (then cached): the wrong flavour of connection for the function
that receives it, and the plain ``Depends(get_db)`` beside ``Db``/``Tx``.

- A sync connection (``Db``, ``Tx``) in an ``async def`` runs its queries on the event loop: every
  other request stalls meanwhile. An async one (``AsyncDb``, ``AsyncTx``) in a ``def`` cannot be
  awaited: the execution layer refuses it as a bad argument, which the exception handlers would
  answer as a client's 422.
- FastAPI shares a dependency between the parameters of one request only for the same function in
  the same scope: ``Depends(get_db)`` (scope "request") beside ``Db`` or ``Tx`` (scope "function",
  another function) takes a second pool slot, and under load requests wait for each other's second
  slot until PoolExhausted.

Both are the service's bugs, not the client's: the dependency raises a DataLayerError (FastAPI's 500)
naming the route, the function and the dependency to use instead, before it takes any connection.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

from fastapi import Request

from datalayer import aio
from datalayer.defaults import get_db
from datalayer.errors import DataLayerError

__all__ = ["Flavours", "check_route"]

log = logging.getLogger("datalayer.fastapi")

Flavour = Literal["sync", "async"]


class Flavours:
    """The dependency functions of each flavour, by id (a user's dependency may be an unhashable
    callable; these are module-level functions, alive for good): ``own`` maps ours to how the user
    wrote them, ``plain`` the process defaults' ``get_db``."""

    def __init__(self, sync: dict[Callable[..., Any], str], async_: dict[Callable[..., Any], str]) -> None:
        self.own: dict[int, tuple[Flavour, str]] = {
            **{id(call): ("sync", name) for call, name in sync.items()},
            **{id(call): ("async", name) for call, name in async_.items()},
        }
        self.plain: dict[int, str] = {
            id(get_db): "Depends(datalayer.get_db)",
            id(aio.get_db): "Depends(datalayer.aio.get_db)",
        }


# Set on the route the first time one of its requests asks for a connection: the problem, or None.
_MARK = "_datalayer_misuse"
_UNCHECKED = object()


def check_route(request: Request | None, flavours: Flavours) -> None:
    """Raise the DataLayerError describing how the request's route misuses the dependencies, if it does."""
    if request is None:
        return  # a websocket route: FastAPI passes no Request (the connection is the handler's alone)
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if route is None or dependant is None:
        return  # not a FastAPI route (a mounted app calling the function itself): nothing to check
    problem = getattr(route, _MARK, _UNCHECKED)
    if problem is _UNCHECKED:
        # Kept on the route itself (routes compare by path, so they cannot key a dict): it lives and
        # dies with the app. Two requests racing here compute the same answer.
        problem = _problem(route, dependant, flavours)
        setattr(route, _MARK, problem)
        if problem is not None:
            log.error("%s", problem)  # once per route; each request still gets the 500
    if problem is not None:
        raise DataLayerError(str(problem))


def _problem(route: Any, dependant: Any, flavours: Flavours) -> str | None:
    where = _route_name(route)
    own: list[str] = []
    plain: list[str] = []
    for consumer, dep in _edges(dependant):
        call = id(dep.call)
        if call in flavours.plain:
            plain.append(flavours.plain[call])
        kind = flavours.own.get(call)
        if kind is None:
            continue
        flavour, name = kind
        if id(consumer) in flavours.own:
            continue  # Tx over Db, AsyncTx over AsyncDb: ours, right by construction
        own.append(name)
        is_async = _is_async(consumer)
        who = "handler" if consumer is dependant.call else "dependency"
        what = f"{who} {_call_name(consumer)} of {where}"
        if flavour == "sync" and is_async:
            return (
                f"{what} is an `async def` but asks for {name}, a sync connection: its queries would block "
                f"the event loop and stall every other request. Annotate it with Async{name} instead "
                "(datalayer.aio's pool, awaited), or make it a plain `def`"
            )
        if flavour == "async" and not is_async:
            return (
                f"{what} is a plain `def` but asks for {name}, an async connection it cannot await. "
                f"Annotate it with {name.removeprefix('Async')} instead (datalayer's sync pool), or make it "
                "an `async def`"
            )
    if own and plain:
        return (
            f"{where} asks for {own[0]} and for {plain[0]}: FastAPI gives them two "
            "connections (their dependency scopes differ), two pool slots per request, and under load "
            "requests wait for each other's second slot until PoolExhausted. Use Db (AsyncDb) for the "
            "connection and Tx (AsyncTx) for the unit of work: they share one connection"
        )
    return None


def _edges(dependant: Any) -> Iterator[tuple[Callable[..., Any], Any]]:
    """(function, one of its dependencies) for every dependency in the tree."""
    stack = [dependant]
    while stack:
        node = stack.pop()
        for dep in node.dependencies:
            yield node.call, dep
            stack.append(dep)


def _unwrap(call: Any) -> Any:
    while isinstance(call, functools.partial):
        call = call.func
    return inspect.unwrap(call)


def _is_async(call: Any) -> bool:
    """Awaited by FastAPI (a coroutine function or an async generator), not run in a worker thread."""
    fn = _unwrap(call)
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    if inspect.isclass(fn) or inspect.isroutine(fn):
        return False
    dunder = _unwrap(getattr(fn, "__call__", None))  # noqa: B004 - an instance with an async __call__
    return inspect.iscoroutinefunction(dunder) or inspect.isasyncgenfunction(dunder)


def _call_name(call: Any) -> str:
    fn = _unwrap(call)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    try:
        file = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return name
    return f"{name} ({file}:{line})"


def _route_name(route: Any) -> str:
    methods = ",".join(sorted(getattr(route, "methods", None) or ()))
    return f"route {methods} {getattr(route, 'path', '?')}".replace("  ", " ")
