"""The one place that executes a Query: one / maybe / many / scalar / exec / copy.

A query is bound once, at import, to the record type its function returns::

    _get_by_id = sql.load(SQL / "users.sql").bind("get_by_id", User)

    def get_by_id(db: Connection, user_id: int) -> User | None:
        return _get_by_id.maybe(db, user_id=user_id)

Its methods run the query on a sync connection (``.maybe(db, ...)``); the same methods with an ``a``
(``await .amaybe(adb, ...)``) run it on a ``psycopg.AsyncConnection``: one runner is generated from
the other (``_run_io_async.py`` → ``_run_io.py``), so both follow the same rules.

Binding records the pair for ``datalayer check``, which compares the query's result columns with the
record's fields, and resolves once what each call needs: the cardinality, the row maker and the exact
parameter names every call must pass. Every psycopg error leaves as a datalayer error naming
``sql/<file>.sql:<line>``.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, TypeVar

import attrs

from datalayer import _run_base
from datalayer._run_base import MISSING
from datalayer._run_cursor import check_connection
from datalayer._run_io import _SyncRunner
from datalayer._run_io_async import _AsyncRunner
from datalayer._sql import Query, QueryFile

__all__ = ["Binding", "Bound", "BoundQuery", "bind", "bindings", "check_connection", "strict_records"]

T = TypeVar("T")


@attrs.frozen
class Binding:
    """A query and the Python type its function returns (for ``datalayer check``)."""

    query: Query | None
    domain: str
    name: str
    result: type[Any] | None
    module: str


# Weakly: a binding nobody holds any more cannot be called, so check has nothing to say about it.
_bindings: list[tuple[Binding, weakref.ref[Any]]] = []


def bindings() -> list[Binding]:
    """Every query bound and still held somewhere (import the repository modules first).

    A query an async source ``<x>_async`` binds exactly as its generated twin ``<x>`` does (same query,
    same result type) counts once, as the twin's: check reports it once, about the code both run.
    """
    _bindings[:] = [(b, ref) for b, ref in _bindings if ref() is not None]
    live = [b for b, _ in _bindings]
    held = {(b.module, b.domain, b.name, b.result) for b in live}
    return [
        b
        for b in live
        if not (b.module.endswith("_async") and (b.module.removesuffix("_async"), b.domain, b.name, b.result) in held)
    ]


def strict_records(enabled: bool) -> bool:
    """Check every record a bound query builds against its field types; returns the previous setting.

    A mismatch (None in a field not typed Optional, a wrong type, a wrong list element, a bad nested
    record) raises QueryError naming the query, the field and the value's type. For tests: it costs a
    walk over every record built.
    """
    previous = _run_base.strict is not None
    if enabled:
        from datalayer._record_check import check_record  # only when asked for

        _run_base.strict = check_record
    else:
        _run_base.strict = None
    return previous


class BoundQuery(_SyncRunner[T], _AsyncRunner[T]):
    """A named query bound to its result type ``T``: call the method of its declared cardinality.

    ``one`` / ``maybe`` / ``many`` / ``scalar`` / ``exec`` / ``copy`` take a sync connection;
    ``aone`` / ``amaybe`` / ``amany`` / ``ascalar`` / ``aexec`` / ``acopy`` a ``psycopg.AsyncConnection``
    (awaited). Every call passes exactly the query's parameters, by keyword (``**dict`` too): a
    missing or extra one is a QueryError naming both sets.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        q = self.query
        return f"<BoundQuery {q.file} missing {q.qualname}>" if self._card == MISSING else f"<BoundQuery {q.location}>"

    copy_in = _SyncRunner.copy  # the name the built-in system_log repository still calls


Bound = BoundQuery  # the name the built-in repositories annotate with


def bind_query(queries: QueryFile, name: str, result: type[T] | None, *, module: str) -> BoundQuery[T]:
    """Bind ``queries`` name to ``result``, recorded for ``datalayer check`` as bound in ``module``.

    A missing name does not break the import: ``check`` reports it with its file, and a call raises
    QueryError naming it.
    """
    found = query = queries.queries.get(name)
    if query is None:
        query = Query(
            name=name,
            domain=queries.domain,
            cardinality=MISSING,
            text="",
            sql="",
            params=(),
            file=queries.where,
            line=0,
            sql_line=0,
            doc="",
            annotations={},
            statement="",
        )
    bound = BoundQuery(query, result)
    binding = Binding(query=found, domain=queries.domain, name=name, result=result, module=module)
    _bindings.append((binding, weakref.ref(bound)))
    return bound


def bind(queries: QueryFile, name: str, result: type[T] | None) -> BoundQuery[T]:
    """Bind ``queries[name]`` to the type its function returns (``None`` for :exec and :copy)."""
    module = str(sys._getframe(1).f_globals.get("__name__", "?"))
    return bind_query(queries, name, result, module=module)
