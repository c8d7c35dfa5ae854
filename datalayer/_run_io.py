# Generated from datalayer/_run_io_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""Running a bound query on an async connection: the source of ``_run_io.py``, its sync twin.

``tools/async_to_sync.py`` generates the sync runner from this file, so both run a query by the same
rules: exact parameters, the kept cursor, the row maker, strict records, a read retried on a fresh
pooled connection after its own died, and every psycopg error translated with its ``file.sql:line``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Never, TypeVar, cast

import psycopg
from psycopg.rows import tuple_row

from datalayer import _run_base, tracing
from datalayer._acompat import sleep
from datalayer._connection import known_dead
from datalayer._read_your_writes import note_write
from datalayer._replica_server import read_only_session
from datalayer._run_base import RunnerBase
from datalayer._run_cursor import check_connection, closed_error, expired, kept_cursor, new_cursor
from datalayer._run_failure import Rows, is_unsendable, row_failure, shown, unstorable
from datalayer._translate import is_connection_lost, lost_before_sending, read_only_write, translate
from datalayer.errors import MultipleRowsFound, NotFound, PoolExhausted, QueryError
from datalayer.pool import DataLayerPool, checkout, give_back
from datalayer.transactions import in_transaction, replicas_configured, written

__all__ = ["READ_RETRY_SECONDS"]

T = TypeVar("T")

# How long an idempotent read may keep trying fresh connections after its own connection died.
READ_RETRY_SECONDS = 2.0


class _SyncRunner(RunnerBase[T]):
    __slots__ = ()

    def _execute(
        self, db: psycopg.Connection[Any], params: dict[str, Any], mark: tracing.Mark | None = None
    ) -> psycopg.Cursor[Any] | Rows:
        if params.keys() != self._params:
            self._bad_params(params)
        cur: psycopg.Cursor[Any] | None = getattr(db, "_dl_cursor", None)  # the kept cursor, inlined
        if cur is None or cur.closed:
            cur = kept_cursor(db)  # first: it refuses what is not a connection of this kind
        if not self._read_only:
            if getattr(db, "_dl_primary", None) is not None:
                raise read_only_write(self.query)  # a replica connection, wherever it landed
            if db.autocommit and not in_transaction(db) and known_dead(db):
                raise lost_before_sending(self.query)  # never sent: a TransientError, not CommitUnknown
        try:
            cur.execute(self._sql, params)
        except (psycopg.Error, UnicodeEncodeError) as e:
            return self._recover(db, params, e, mark)
        # After the execute, with nothing awaited until the rows are read: a task (or thread) sharing
        # the connection may have set its own row maker on the kept cursor while this one waited.
        if cur.row_factory is not self._factory:  # setting it builds a row maker: only when it changes
            cur.row_factory = self._factory
        if not self._columns_ok:
            self._check_columns(cur)
        if not self._read_only and not in_transaction(db):  # in one, its COMMIT marks the context
            if not replicas_configured(db):
                note_write()  # this context's replica reads wait for it (no round trip)
            else:  # the rows first: once this awaits, the kept cursor may serve another task
                try:
                    rows = Rows(cur.fetchall(), cur.rowcount)
                except psycopg.Error:
                    raise
                except Exception as e:  # the row maker: a value that cannot become a T
                    raise self._failed(cur, e) from None
                written(db)
                return rows
        return cur

    def _recover(
        self,
        db: psycopg.Connection[Any],
        params: dict[str, Any],
        e: psycopg.Error | UnicodeEncodeError,
        mark: tracing.Mark | None,
    ) -> Rows:
        """The failure path of an execute: the read's rows from a fresh connection, or the error to raise."""
        if is_unsendable(e) and (bad := unstorable(self.query, params.items(), e)) is not e:
            raise bad from None
        if not isinstance(e, psycopg.Error):
            raise e
        if (closed := closed_error(db)) is not None:  # a pooled connection's kept cursor outlives a close()
            raise closed from None
        outside = db.autocommit and not in_transaction(db)
        # A read past its deadline is not run again: the caller gets its error on time.
        if self._read_only and outside and is_connection_lost(e, db) and not expired(db):
            # A replica connection's read runs again on the primary (read-only there): its replica may be gone.
            primary = getattr(db, "_dl_primary", None)
            pool = primary or getattr(db, "_pool", None)
            if isinstance(pool, DataLayerPool):
                return self._retry_read(pool, params, e, mark, read_only=primary is not None)
        write = not self._read_only and outside
        raise translate(e, self.query, conn=db, write_may_have_committed=write) from e

    def _retry_read(
        self,
        pool: DataLayerPool,
        params: dict[str, Any],
        first: psycopg.Error,
        mark: tracing.Mark | None,
        *,
        read_only: bool = False,
    ) -> Rows:
        """Run an idempotent read again on fresh pooled connections, within READ_RETRY_SECONDS.

        Only reads outside a transaction get here: running them twice cannot change anything. A traced
        call reports the server that answered (the primary, for a replica's read).
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
            if mark is not None:
                mark.answered_by(conn)
            try:
                if read_only:
                    read_only_session(conn, pool.settings)
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
            sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        raise translate(last, self.query) from last

    def _traced(self, db: psycopg.Connection[Any], params: dict[str, Any]) -> object:
        """A call while a tracer is installed: its event goes out once the result is made (so a tracer
        may even use the caller's connection), or once the call failed or was cancelled (re-raised as
        it came)."""
        if tracing.in_tracer():  # a tracer's own query: not traced
            return self._answer(db, params, None)
        # Refused before anything is sent (wrong parameters, not a connection): nothing to trace.
        if params.keys() != self._params:
            self._bad_params(params)
        check_connection(db)
        mark = tracing.Mark(db)
        try:
            result = self._answer(db, params, mark)
        except BaseException as e:
            failure: BaseException | None = e
        else:
            failure = None
        try:
            return self._emitted(mark, failure, result if failure is None else None)
        finally:
            failure = None  # re-raised: its traceback holds this frame

    def _answer(self, db: psycopg.Connection[Any], params: dict[str, Any], mark: tracing.Mark | None) -> object:
        """What the public method of this query's cardinality returns (the traced path's one copy of them)."""
        cur = self._execute(db, params, mark)
        if mark is not None:
            mark.rows = cur.rowcount
        card = self._card
        if card == "exec":
            return cur.rowcount
        if card == "many":
            return self._all_rows(cur)
        if card == "maybe":
            return self._maybe_row(cur, params)
        return self._only_row(cur, params)

    def _failed(self, cur: psycopg.Cursor[Any] | Rows, error: Exception) -> QueryError:
        """The QueryError for a row that could not become a ``T``, naming the field and the value's type."""
        result = cast(type, self.result)
        if isinstance(cur, Rows):  # already made into records: the row maker cannot fail on them
            return row_failure(self.query, result, error, description=None, first=0, rows=[])
        first = cur.rownumber or 0
        cur.row_factory = tuple_row  # the same rows, as fetched: the failing one is still unread
        return row_failure(self.query, result, error, description=cur.description, first=first, rows=cur.fetchall())

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
            raise self._failed(cur, e) from None
        strict = _run_base.strict
        if strict is not None and self._checked is not None and (problem := strict(row, self._checked)):
            raise self._mismatch(row, problem)
        return cast(T, row)

    def one(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """Exactly one row: NotFound on none, MultipleRowsFound on more."""
        if self._card != "one":
            self._refuse("one")
        if tracing._tracers:
            return cast(T, self._traced(db, params))
        return self._only_row(self._execute(db, params), params)

    def maybe(self, db: psycopg.Connection[Any], /, **params: Any) -> T | None:
        """One row or None: MultipleRowsFound on more than one."""
        if self._card != "maybe":
            self._refuse("maybe")
        if tracing._tracers:
            return cast("T | None", self._traced(db, params))
        return self._maybe_row(self._execute(db, params), params)

    def _maybe_row(self, cur: psycopg.Cursor[Any] | Rows, params: dict[str, Any]) -> T | None:
        if cur.rowcount > 1:
            raise MultipleRowsFound(
                f"{cur.rowcount} rows for {self.query.location}, expected at most one ({shown(params)})"
            )
        try:
            row: T | None = cur.fetchone()  # annotated, not cast(): no call on the hot path
        except psycopg.Error:
            raise
        except Exception as e:  # the row maker: a value that cannot become a T
            raise self._failed(cur, e) from None
        strict = _run_base.strict
        if (
            strict is not None
            and row is not None
            and self._checked is not None
            and (problem := strict(row, self._checked))
        ):
            raise self._mismatch(row, problem)
        return row

    def many(self, db: psycopg.Connection[Any], /, **params: Any) -> list[T]:
        """Every row."""
        if self._card != "many":
            self._refuse("many")
        if tracing._tracers:
            return cast("list[T]", self._traced(db, params))
        return self._all_rows(self._execute(db, params))

    def _all_rows(self, cur: psycopg.Cursor[Any] | Rows) -> list[T]:
        try:
            rows: list[T] = cur.fetchall()
        except psycopg.Error:
            raise
        except Exception as e:  # the row maker: a value that cannot become a T
            raise self._failed(cur, e) from None
        strict = _run_base.strict
        if strict is not None and self._checked is not None:
            for i, row in enumerate(rows):
                if problem := strict(row, self._checked):
                    raise self._mismatch(row, f"row {i + 1}: {problem}")
        return rows

    def scalar(self, db: psycopg.Connection[Any], /, **params: Any) -> T:
        """The first column of the only row (NotFound on no row)."""
        if self._card != "scalar":
            self._refuse("scalar")
        if tracing._tracers:
            return cast(T, self._traced(db, params))
        return self._only_row(self._execute(db, params), params)

    def exec(self, db: psycopg.Connection[Any], /, **params: Any) -> int:
        """Run a statement without a result; returns the number of rows it touched."""
        if self._card != "exec":
            self._refuse("exec")
        if tracing._tracers:
            return cast(int, self._traced(db, params))
        rowcount: int = (self._execute(db, params)).rowcount
        return rowcount

    def copy(self, db: psycopg.Connection[Any], rows: Iterable[Sequence[Any]] = (), /, **params: Never) -> int:
        """Stream ``rows`` through ``COPY … FROM STDIN``; returns how many were sent."""
        if self._card != "copy":
            self._refuse("copy")
        if params:  # typed Never: mypy refuses them too
            self._refuse_copy_params(params)
        cur = new_cursor(db)  # first: it refuses what is not a connection of this kind
        if getattr(db, "_dl_primary", None) is not None:
            cur.close()
            raise read_only_write(self.query)
        if db.autocommit and not in_transaction(db) and known_dead(db):
            cur.close()
            raise lost_before_sending(self.query)
        if not tracing._tracers or tracing.in_tracer():
            return self._copy_rows(db, cur, rows)
        mark = tracing.Mark(db)
        try:
            mark.rows = self._copy_rows(db, cur, rows)
        except BaseException as e:
            failure: BaseException | None = e
        else:
            failure = None
        try:
            return cast(int, self._emitted(mark, failure, mark.rows))
        finally:
            failure = None  # re-raised: its traceback holds this frame

    def _copy_rows(self, db: psycopg.Connection[Any], cur: psycopg.Cursor[Any], rows: Iterable[Sequence[Any]]) -> int:
        count = 0
        row: Sequence[Any] = ()
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
        if not in_transaction(db):
            written(db)
        return count
