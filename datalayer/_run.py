"""The one place that executes a Query: one / maybe / many / scalar / exec / copy.

A query is bound once, at import, to the record type its function returns::

    _get_by_id = bind(_q, "get_by_id", User)

    def get_by_id(db: Connection, user_id: int) -> User | None:
        return _get_by_id.maybe(db, user_id=user_id)

Binding records the pair for ``datalayer check``, which compares the query's result columns with the
record's fields. Every psycopg error leaves as a datalayer error naming ``sql/<file>.sql:<line>``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar, cast

import attrs
import psycopg
from psycopg.rows import RowFactory, RowMaker, tuple_row
from psycopg.types.json import Json, Jsonb

from datalayer._connection import known_dead
from datalayer._sql import Query, QueryFile
from datalayer._translate import is_connection_lost, lost_before_sending, translate
from datalayer.errors import MultipleRowsFound, NotFound, PoolExhausted, QueryError, ValidationError
from datalayer.pool import DataLayerPool, checkout, give_back
from datalayer.rows import attrs_row
from datalayer.text import nested_text_problem
from datalayer.transactions import in_transaction

__all__ = ["Binding", "Bound", "bind", "bindings", "check_connection"]

T = TypeVar("T")

# How long an idempotent read may keep trying fresh connections after its own connection died.
READ_RETRY_SECONDS = 2.0
_SECRET_PARAMS = frozenset({"hashed_password", "password", "token", "secret", "value"})


@attrs.frozen
class Binding:
    """A query and the Python type its function returns (for ``datalayer check``)."""

    query: Query | None
    domain: str
    name: str
    result: type[Any] | None
    module: str


_bindings: list[Binding] = []


def bindings() -> list[Binding]:
    """Every query bound so far (import the repository modules first)."""
    return list(_bindings)


def check_connection(db: object, *, open_: bool = False) -> None:
    """ValidationError naming ``db`` unless it is a sync psycopg.Connection (and, with ``open_``, open).

    Called where a cursor is made, and first by functions that do other work before their query
    (system_log's writers keep partitions ahead, which logs rather than raises its own failures), so a
    wrong or closed ``db`` is refused before anything else.
    """
    # Not per call: an AsyncConnection would hand back coroutines (and a RuntimeWarning) instead of
    # rows, anything else an AttributeError.
    if not isinstance(db, psycopg.Connection):
        what = "a psycopg.AsyncConnection" if isinstance(db, psycopg.AsyncConnection) else type(db).__name__
        raise ValidationError(
            {
                "db": f"must be a sync psycopg.Connection, got {what}; datalayer's repository functions are "
                "synchronous: pass a connection from datalayer.connection() or get_db() (from async code, "
                "call them in a worker thread, e.g. anyio.to_thread.run_sync)"
            }
        )
    if open_ and db.closed and (closed := _closed(db)) is not None:
        raise closed


def _new_cursor(db: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    check_connection(db)
    try:
        return db.cursor()
    except psycopg.OperationalError as e:
        raise _closed(db) or translate(e, conn=db) from None


def _closed(db: psycopg.Connection[Any]) -> ValidationError | None:
    """The error for a connection its owner closed (one the server dropped is a TransientError).

    Failure path only: ``closed`` is asked after psycopg refused the connection, never per call.
    """
    if db.closed and not db.broken and not _expired(db):  # closed by its deadline: the server never answered
        return ValidationError(
            {"db": "is closed; pass an open connection (use it inside `with datalayer.connection() as db:`)"}
        )
    return None


def _cursor(db: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    cur: psycopg.Cursor[Any] | None = getattr(db, "_dl_cursor", None)
    if cur is None or cur.closed:
        cur = _new_cursor(db)
        if hasattr(db, "_dl_cursor"):  # a pooled connection (or a get_db() lease of one)
            db._dl_cursor = cur
    return cur


def _expired(db: psycopg.Connection[Any]) -> bool:
    return bool(getattr(db, "_dl_expired", False))


class _Rows:
    """The rows of a read that was retried on another connection, read like a cursor."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows


def _shown(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        shown = "***" if k in _SECRET_PARAMS else repr(v)
        parts.append(f"{k}={shown[:60]}")
    return ", ".join(parts)


def _bad_text(value: Any) -> str | None:
    """What is wrong with the first unstorable text inside a parameter value (lists and dicts too)."""
    # psycopg's Json/Jsonb wrappers keep the value in .obj
    return nested_text_problem(value.obj if isinstance(value, Json | Jsonb) else value)


def _unstorable(query: Query, params: Iterable[tuple[str, Any]], e: Exception) -> Exception:
    """The ValidationError naming the parameter psycopg could not send (lone surrogate, NUL), or ``e``.

    A backstop: the repositories check their text first. Runs on the failure path only.
    """
    for name, value in params:
        if (problem := _bad_text(value)) is not None:
            return ValidationError({name: f"{problem} (sent to {query.location})"})
    return e


def _is_unsendable(e: Exception) -> bool:
    # psycopg refuses NUL in text client-side, as a DataError without a SQLSTATE.
    return isinstance(e, UnicodeEncodeError) or (isinstance(e, psycopg.DataError) and e.sqlstate is None)


def _first_column(cursor: Any) -> RowMaker[Any]:
    def make(values: Sequence[Any]) -> Any:
        return values[0]

    return make


class Bound(Generic[T]):
    """A named query bound to its result type ``T``; the methods check the declared cardinality."""

    __slots__ = ("_factory", "_sql", "query")

    def __init__(self, query: Query, result: type[T] | None) -> None:
        self.query = query
        self._sql = query.sql
        self._factory: RowFactory[Any] = tuple_row
        if result is not None:
            self._factory = attrs_row(result) if attrs.has(result) else _first_column

    def __repr__(self) -> str:
        return f"<Bound {self.query.location}>"

    def _execute(self, db: psycopg.Connection[Any], params: dict[str, Any]) -> psycopg.Cursor[Any] | _Rows:
        cur = _cursor(db)  # first: it refuses what is not a sync connection (see _new_cursor)
        if not self.query.read_only and db.autocommit and not in_transaction(db) and known_dead(db):
            raise lost_before_sending(self.query)  # never sent: a TransientError, not CommitUnknown
        cur.row_factory = self._factory
        try:
            cur.execute(self._sql, params)
        except (psycopg.Error, UnicodeEncodeError) as e:
            if _is_unsendable(e) and (bad := _unstorable(self.query, params.items(), e)) is not e:
                raise bad from None
            if not isinstance(e, psycopg.Error):
                raise
            if (closed := _closed(db)) is not None:  # a pooled connection's kept cursor outlives a close()
                raise closed from None
            outside = db.autocommit and not in_transaction(db)
            # A read past its deadline is not run again: the caller gets its error on time.
            if self.query.read_only and outside and is_connection_lost(e, db) and not _expired(db):
                pool = getattr(db, "_pool", None)
                if isinstance(pool, DataLayerPool):
                    return self._retry_read(pool, params, e)
            write = not self.query.read_only and outside
            raise translate(e, self.query, conn=db, write_may_have_committed=write) from e
        except KeyError as e:
            raise QueryError(
                f"missing parameter {e} for {self.query.location}; it takes {', '.join(self.query.params)}",
                location=self.query.location,
            ) from None
        return cur

    def _retry_read(self, pool: DataLayerPool, params: dict[str, Any], first: psycopg.Error) -> _Rows:
        """Run an idempotent read again on fresh pooled connections, within READ_RETRY_SECONDS.

        Only reads outside a transaction get here: running them twice cannot change anything.
        """
        deadline = time.monotonic() + READ_RETRY_SECONDS
        last: psycopg.Error = first
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                conn = checkout(pool, timeout=remaining)
            except PoolExhausted:
                break
            try:
                with conn.cursor(row_factory=self._factory) as cur:
                    cur.execute(self._sql, params)
                    return _Rows(cur.fetchall(), cur.rowcount)
            except psycopg.Error as e:
                if not is_connection_lost(e, conn) or _expired(conn):
                    raise translate(e, self.query, conn=conn) from e
                last = e
            finally:
                give_back(pool, conn)
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        raise translate(last, self.query) from last

    def _expect(self, *cards: str) -> None:
        if self.query.cardinality == "missing":
            raise QueryError(
                f"{self.query.file} has no query named {self.query.name!r}; add it or fix the name",
                location=self.query.file,
            )
        if self.query.cardinality not in cards:
            raise QueryError(
                f"{self.query.location} is declared :{self.query.cardinality}; "
                f"call it with .{self.query.cardinality}()",
                location=self.query.location,
            )

    def _only_row(self, cur: psycopg.Cursor[Any] | _Rows, params: dict[str, Any]) -> T:
        if cur.rowcount != 1:
            if cur.rowcount == 0:
                raise NotFound(f"no row for {self.query.location} ({_shown(params)})")
            raise MultipleRowsFound(f"{cur.rowcount} rows for {self.query.location}, expected one ({_shown(params)})")
        return cast(T, cur.fetchone())

    def one(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """Exactly one row: NotFound on none, MultipleRowsFound on more."""
        self._expect("one")
        return self._only_row(self._execute(db, params), params)

    def maybe(self, db: psycopg.Connection[Any], /, **params: Any) -> T | None:
        """One row or None: MultipleRowsFound on more than one."""
        self._expect("maybe")
        cur = self._execute(db, params)
        if cur.rowcount > 1:
            raise MultipleRowsFound(
                f"{cur.rowcount} rows for {self.query.location}, expected at most one ({_shown(params)})"
            )
        return cast("T | None", cur.fetchone())

    def many(self, db: psycopg.Connection[Any], /, **params: Any) -> list[T]:
        """Every row."""
        self._expect("many")
        return cast("list[T]", self._execute(db, params).fetchall())

    def scalar(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """The first column of the only row (NotFound on no row)."""
        self._expect("scalar")
        return self._only_row(self._execute(db, params), params)

    def exec(self, db: psycopg.Connection[Any], /, **params: Any) -> int:
        """Run a statement without a result; returns the number of rows it touched."""
        self._expect("exec")
        rowcount: int = self._execute(db, params).rowcount
        return rowcount

    def copy_in(self, db: psycopg.Connection[Any], rows: Iterable[Sequence[Any]]) -> int:
        """Stream ``rows`` through ``COPY … FROM STDIN``; returns how many were sent."""
        self._expect("copy")
        count = 0
        row: Sequence[Any] = ()
        cur = _new_cursor(db)  # first: it refuses what is not a sync connection
        if db.autocommit and not in_transaction(db) and known_dead(db):
            cur.close()
            raise lost_before_sending(self.query)
        try:
            with cur, cur.copy(self._sql.replace("%%", "%")) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        except (psycopg.Error, UnicodeEncodeError) as e:
            if _is_unsendable(e):
                named = ((f"row {count + 1} column {i + 1}", v) for i, v in enumerate(row))
                if (bad := _unstorable(self.query, named, e)) is not e:
                    raise bad from None
            if not isinstance(e, psycopg.Error):
                raise
            if (closed := _closed(db)) is not None:
                raise closed from None
            write = not in_transaction(db) and db.autocommit
            raise translate(e, self.query, conn=db, write_may_have_committed=write) from e
        return count


def bind(queries: QueryFile, name: str, result: type[T] | None) -> Bound[T]:
    """Bind ``queries[name]`` to the type its function returns (``None`` for :exec and :copy).

    A missing query does not break the import: it is reported by ``datalayer check`` and raises
    QueryError when called.
    """
    query = queries.queries.get(name)
    frame = sys._getframe(1)
    module = str(frame.f_globals.get("__name__", "?"))
    _bindings.append(Binding(query=query, domain=queries.domain, name=name, result=result, module=module))
    if query is None:
        file = f"sql/{queries.domain}.sql"
        query = Query(
            name=name,
            domain=queries.domain,
            cardinality="missing",
            text="",
            sql="",
            params=(),
            file=file,
            line=0,
            sql_line=0,
            doc="",
            annotations={},
            statement="",
        )
    return Bound(query, result)
