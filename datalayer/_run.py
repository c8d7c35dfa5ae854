"""The one place that executes a Query: one / maybe / many / scalar / exec / copy.

A query is bound once, at import, to the record type its function returns::

    _get_by_id = sql.load(SQL / "users.sql").bind("get_by_id", User)

    def get_by_id(db: Connection, user_id: int) -> User | None:
        return _get_by_id.maybe(db, user_id=user_id)

Binding records the pair for ``datalayer check``, which compares the query's result columns with the
record's fields, and resolves once what each call needs: the cardinality, the row maker and the exact
parameter names every call must pass. Every psycopg error leaves as a datalayer error naming
``sql/<file>.sql:<line>``.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Never, TypeVar, cast

import attrs
import psycopg
from psycopg.rows import RowFactory, tuple_row

from datalayer._connection import known_dead
from datalayer._run_cursor import check_connection, closed_error, expired, kept_cursor, new_cursor
from datalayer._run_failure import Rows, column_problem, is_unsendable, row_failure, shown, unstorable
from datalayer._sql import Query, QueryFile
from datalayer._translate import is_connection_lost, lost_before_sending, translate
from datalayer.errors import MultipleRowsFound, NotFound, PoolExhausted, QueryError
from datalayer.pool import DataLayerPool, checkout, give_back
from datalayer.rows import attrs_row, value_row
from datalayer.transactions import in_transaction

__all__ = ["Binding", "Bound", "BoundQuery", "bind", "bindings", "check_connection", "strict_records"]

T = TypeVar("T")

# How long an idempotent read may keep trying fresh connections after its own connection died.
READ_RETRY_SECONDS = 2.0


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
    """Every query bound and still held somewhere (import the repository modules first)."""
    _bindings[:] = [(b, ref) for b, ref in _bindings if ref() is not None]
    return [b for b, _ in _bindings]


# strict_records(): when set, the checker every record is passed through (None: off, the default).
_strict: Callable[[object, type], str | None] | None = None


def strict_records(enabled: bool) -> bool:
    """Check every record a bound query builds against its field types; returns the previous setting.

    A mismatch (None in a field not typed Optional, a wrong type, a wrong list element, a bad nested
    record) raises QueryError naming the query, the field and the value's type. For tests: it costs a
    walk over every record built.
    """
    global _strict
    previous = _strict is not None
    if enabled:
        from datalayer._record_check import check_record  # only when asked for

        _strict = check_record
    else:
        _strict = None
    return previous


_MISSING = "missing"  # the cardinality of a name its file does not define


class BoundQuery(Generic[T]):
    """A named query bound to its result type ``T``: call the method of its declared cardinality.

    Every call passes exactly the query's parameters, by keyword (``**dict`` too): a missing or extra
    one is a QueryError naming both sets.
    """

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
        self._factory: RowFactory[Any] = tuple_row
        # Rows fill a record by position: its columns are compared with its fields by name on the first
        # run (and again on the failure path), so the hot path pays one flag test.
        self._columns_ok = result is None or not attrs.has(result)
        if result is not None:
            self._factory = attrs_row(cast(Any, result)) if attrs.has(result) else value_row(cast(Any, result))

    def __repr__(self) -> str:
        q = self.query
        return f"<BoundQuery {q.file} missing {q.qualname}>" if self._card == _MISSING else f"<BoundQuery {q.location}>"

    def _check_columns(self, cur: psycopg.Cursor[Any]) -> None:
        """QueryError unless the result columns are the record's fields, by name and in order."""
        if (problem := column_problem(self.query, cast(type, self.result), cur.description)) is not None:
            raise problem
        self._columns_ok = True

    def _failed(self, cur: psycopg.Cursor[Any], error: Exception) -> QueryError:
        """The QueryError for a row that could not become a ``T``, naming the field and the value's type."""
        return row_failure(self.query, cast(type, self.result), cur, error)

    def _refuse(self, method: str) -> None:
        q = self.query
        if self._card == _MISSING:
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

    def _execute(self, db: psycopg.Connection[Any], params: dict[str, Any]) -> psycopg.Cursor[Any] | Rows:
        if params.keys() != self._params:
            self._bad_params(params)
        cur: psycopg.Cursor[Any] | None = getattr(db, "_dl_cursor", None)  # the kept cursor, inlined
        if cur is None or cur.closed:
            cur = kept_cursor(db)  # first: it refuses what is not a sync connection (see new_cursor)
        if not self._read_only and db.autocommit and not in_transaction(db) and known_dead(db):
            raise lost_before_sending(self.query)  # never sent: a TransientError, not CommitUnknown
        if cur.row_factory is not self._factory:  # setting it builds a row maker: only when it changes
            cur.row_factory = self._factory
        try:
            cur.execute(self._sql, params)
        except (psycopg.Error, UnicodeEncodeError) as e:
            if is_unsendable(e) and (bad := unstorable(self.query, params.items(), e)) is not e:
                raise bad from None
            if not isinstance(e, psycopg.Error):
                raise
            if (closed := closed_error(db)) is not None:  # a pooled connection's kept cursor outlives a close()
                raise closed from None
            outside = db.autocommit and not in_transaction(db)
            # A read past its deadline is not run again: the caller gets its error on time.
            if self._read_only and outside and is_connection_lost(e, db) and not expired(db):
                pool = getattr(db, "_pool", None)
                if isinstance(pool, DataLayerPool):
                    return self._retry_read(pool, params, e)
            write = not self._read_only and outside
            raise translate(e, self.query, conn=db, write_may_have_committed=write) from e
        if not self._columns_ok:
            self._check_columns(cur)
        return cur

    def _retry_read(self, pool: DataLayerPool, params: dict[str, Any], first: psycopg.Error) -> Rows:
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
                with new_cursor(conn, self._factory) as cur:
                    cur.execute(self._sql, params)
                    if not self._columns_ok:
                        self._check_columns(cur)
                    try:
                        return Rows(cur.fetchall(), cur.rowcount)
                    except psycopg.Error:
                        raise
                    except Exception as e:
                        raise self._failed(cur, e) from None
            except psycopg.Error as e:
                if not is_connection_lost(e, conn) or expired(conn):
                    raise translate(e, self.query, conn=conn) from e
                last = e
            finally:
                give_back(pool, conn)
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        raise translate(last, self.query) from last

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

    def _only_row(self, cur: psycopg.Cursor[Any] | Rows, params: dict[str, Any]) -> T:
        if cur.rowcount != 1:
            if cur.rowcount == 0:
                raise NotFound(f"no row for {self.query.location} ({shown(params)})")
            raise MultipleRowsFound(f"{cur.rowcount} rows for {self.query.location}, expected one ({shown(params)})")
        try:
            row = cur.fetchone()
        except psycopg.Error:
            raise
        except Exception as e:  # the row maker: a value that cannot become a T
            raise self._failed(cast(psycopg.Cursor[Any], cur), e) from None
        if _strict is not None and self._checked is not None and (problem := _strict(row, self._checked)):
            raise self._mismatch(row, problem)
        return cast(T, row)

    def one(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """Exactly one row: NotFound on none, MultipleRowsFound on more."""
        if self._card != "one":
            self._refuse("one")
        return self._only_row(self._execute(db, params), params)

    def maybe(self, db: psycopg.Connection[Any], /, **params: Any) -> T | None:
        """One row or None: MultipleRowsFound on more than one."""
        if self._card != "maybe":
            self._refuse("maybe")
        cur = self._execute(db, params)
        if cur.rowcount > 1:
            raise MultipleRowsFound(
                f"{cur.rowcount} rows for {self.query.location}, expected at most one ({shown(params)})"
            )
        try:
            row: T | None = cur.fetchone()  # annotated, not cast(): no call on the hot path
        except psycopg.Error:
            raise
        except Exception as e:  # the row maker: a value that cannot become a T
            raise self._failed(cast(psycopg.Cursor[Any], cur), e) from None
        if (
            _strict is not None
            and row is not None
            and self._checked is not None
            and (problem := _strict(row, self._checked))
        ):
            raise self._mismatch(row, problem)
        return row

    def many(self, db: psycopg.Connection[Any], /, **params: Any) -> list[T]:
        """Every row."""
        if self._card != "many":
            self._refuse("many")
        cur = self._execute(db, params)
        try:
            rows: list[T] = cur.fetchall()
        except psycopg.Error:
            raise
        except Exception as e:  # the row maker: a value that cannot become a T
            raise self._failed(cast(psycopg.Cursor[Any], cur), e) from None
        if _strict is not None and self._checked is not None:
            for i, row in enumerate(rows):
                if problem := _strict(row, self._checked):
                    raise self._mismatch(row, f"row {i + 1}: {problem}")
        return rows

    def scalar(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """The first column of the only row (NotFound on no row)."""
        if self._card != "scalar":
            self._refuse("scalar")
        return self._only_row(self._execute(db, params), params)

    def exec(self, db: psycopg.Connection[Any], /, **params: Any) -> int:
        """Run a statement without a result; returns the number of rows it touched."""
        if self._card != "exec":
            self._refuse("exec")
        rowcount: int = self._execute(db, params).rowcount
        return rowcount

    def copy(self, db: psycopg.Connection[Any], rows: Iterable[Sequence[Any]] = (), /, **params: Never) -> int:
        """Stream ``rows`` through ``COPY … FROM STDIN``; returns how many were sent."""
        if self._card != "copy":
            self._refuse("copy")
        if params:  # typed Never: mypy refuses them too
            raise QueryError(
                f"{self.query.location}: .copy(db, rows) takes the rows only, not {', '.join(sorted(params))}; "
                "COPY has no parameters",
                location=self.query.location,
            )
        count = 0
        row: Sequence[Any] = ()
        cur = new_cursor(db)  # first: it refuses what is not a sync connection
        if db.autocommit and not in_transaction(db) and known_dead(db):
            cur.close()
            raise lost_before_sending(self.query)
        try:
            with cur, cur.copy(self.query.sql.replace("%%", "%")) as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        except (psycopg.Error, UnicodeEncodeError) as e:
            if is_unsendable(e):
                named = ((f"row {count + 1} column {i + 1}", v) for i, v in enumerate(row))
                if (bad := unstorable(self.query, named, e)) is not e:
                    raise bad from None
            if not isinstance(e, psycopg.Error):
                raise
            if (closed := closed_error(db)) is not None:
                raise closed from None
            write = not in_transaction(db) and db.autocommit
            raise translate(e, self.query, conn=db, write_may_have_committed=write) from e
        return count

    copy_in = copy  # the name the built-in system_log repository still calls


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
            cardinality=_MISSING,
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
