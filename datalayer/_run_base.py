"""What a bound query is besides running it: its resolved shape and the errors it raises.

Both runners (``_run_io_async._AsyncRunner`` and its generated sync twin ``_run_io._SyncRunner``)
build on this; ``_run.BoundQuery`` is both, choosing by the connection it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import attrs
import psycopg
from psycopg.rows import tuple_row

from datalayer import tracing
from datalayer._run_failure import column_problem
from datalayer._sql import Query
from datalayer.errors import NotFound, QueryError
from datalayer.rows import attrs_row, value_row

__all__ = ["MISSING", "RunnerBase"]

T = TypeVar("T")

MISSING = "missing"  # the cardinality of a name its file does not define

# strict_records(): when set, the checker every record is passed through (None: off, the default).
strict: Callable[[object, type], str | None] | None = None


class RunnerBase(Generic[T]):
    __slots__ = (
        "__weakref__",
        "_card",
        "_checked",
        "_columns_ok",
        "_factory",
        "_params",
        "_read_only",
        "_sql",
        "query",
        "result",
    )

    def __init__(self, query: Query, result: type[T] | None) -> None:
        self.query = query
        self.result = result
        self._card = query.cardinality
        self._params = frozenset(query.params)
        self._read_only = query.read_only
        # Kept as str: psycopg checks a bytes query against an ABC (Composable) first, which costs more
        # than the encode a str gets (measured: ~+250 ns per call).
        self._sql = query.sql
        # What strict_records() checks each result against: the record class, or the single value's type.
        self._checked: type[Any] | None = result
        # Any: the same row maker serves sync and async cursors (psycopg types them apart).
        self._factory: Any = tuple_row
        # Rows fill a record by position: its columns are compared with its fields by name on the first
        # run (and again on the failure path), so the hot path pays one flag test.
        self._columns_ok = result is None or not attrs.has(result)
        if result is not None:
            self._factory = attrs_row(cast(Any, result)) if attrs.has(result) else value_row(cast(Any, result))

    def _check_columns(self, cur: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
        """QueryError unless the result columns are the record's fields, by name and in order."""
        if (problem := column_problem(self.query, cast(type, self.result), cur.description)) is not None:
            raise problem
        self._columns_ok = True

    def _emitted(self, mark: tracing.Mark, failure: BaseException | None, result: object) -> object:
        """Emit a traced call's event, then return its result or raise its failure as it came.

        Called outside any ``except`` block: a tracer that raises then never has the caller's error
        (whose message may hold values) as its context.
        """
        if failure is None:
            mark.done(self.query)
            return result
        try:
            # NotFound is the answer "no row" (the statement ran): not a failure of the query.
            mark.done(self.query, None if isinstance(failure, NotFound) else failure)
            raise failure
        finally:
            del failure  # the traceback holds this frame

    def _refuse(self, method: str) -> None:
        q = self.query
        if self._card == MISSING:
            raise QueryError(
                f"{q.file} has no query named {q.name!r}; add a '-- name: {q.name}' block there or fix the name "
                "(datalayer check lists every such binding)",
                location=q.file,
            )
        raise QueryError(
            f"{q.location} is declared :{self._card}; call it with .{self._card}(), not .{method}()",
            location=q.location,
        )

    def _bad_params(self, params: dict[str, Any]) -> None:
        given = set(params)
        missing, extra = sorted(self._params - given), sorted(given - self._params)
        parts = [f"missing {', '.join(missing)}" if missing else "", f"extra {', '.join(extra)}" if extra else ""]
        takes = ", ".join(self.query.params) or "no parameters"
        raise QueryError(
            f"{self.query.location}: {'; '.join(p for p in parts if p)}; it takes exactly: {takes}",
            location=self.query.location,
        )

    def _refuse_copy_params(self, params: dict[str, Any]) -> None:
        raise QueryError(
            f"{self.query.location}: .copy(db, rows) takes the rows only, not {', '.join(sorted(params))}; "
            "COPY has no parameters",
            location=self.query.location,
        )

    def _mismatch(self, value: object, problem: str) -> QueryError:
        # Names the value's type only: the value itself may be a secret.
        where = self.query.location
        if self.result is not None and attrs.has(self.result):
            remedy = "fix the query (e.g. COALESCE, a join that cannot miss) or the field's type"
        elif "got None" in problem:
            remedy = "COALESCE the column, or bind the query with nullable=True"
        else:
            remedy = "bind the query to the type its first column holds (or cast the column in the query)"
        return QueryError(
            f"{where}: strict records: {problem} (a {type(value).__name__} built from this query); {remedy}",
            location=where,
        )
