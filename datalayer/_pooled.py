# Generated from datalayer/_pooled_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The class of every pooled connection (sync and async twins, one source): a deadline on every wait
for the server, a kept cursor, the marks the execution layer reads (``_dl_*``), and the reset a
connection gets when it goes back to its pool.

The checks that need no wait (``alive_idle``, ``known_dead``) and the limits derived from the settings
live in ``_liveness`` and serve both; ``_connection`` names all of it in one place.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen

from datalayer.config import Settings

__all__ = ["DataLayerConnection", "reset_session", "transaction_settings"]

log = logging.getLogger("datalayer")
RV = TypeVar("RV")


class DataLayerConnection(psycopg.Connection[Any]):
    """A psycopg connection with a reusable cursor and a deadline on every wait for the server."""

    # One cursor reused by the query functions: creating a cursor per call costs ~15% on a PK get.
    _dl_cursor: psycopg.Cursor[Any] | None = None
    # Set by the pool (wait_limit): the longest one wait may last, and how long a cancel may try.
    _dl_wait_limit: float | None = None
    _dl_cancel_timeout: float = 5.0
    # True once a wait ran out of time: the connection was closed and no answer will come.
    _dl_expired: bool = False
    # Set when the connection is used other than through the query functions (a raw execute, a cursor
    # of the caller's): the pool then resets the session before lending it again (see reset_session).
    _dl_dirty: bool = False
    # Set by the pool behind a transaction pooler (transaction_settings): the SET LOCAL statement every
    # outermost transaction() begins with. None: the session carries the settings and is reset on return.
    _dl_begin: str | None = None
    # Set while lent by connection(replica=True) (datalayer._replicas_async): the primary's pool, where a
    # read lost with its replica runs again. Such a connection serves reads only (writes are refused).
    _dl_primary: object = None

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        self._dl_dirty = True
        return super().cursor(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._dl_dirty = True
        return super().execute(*args, **kwargs)

    def close(self) -> None:
        self._dl_cursor = None  # breaks the connection <-> cursor reference cycle
        super().close()

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        """psycopg's wait, bounded by the connection's deadline (then it is cancelled and closed)."""
        limit = self._dl_wait_limit
        if limit is None or (timeout is not None and timeout <= limit):
            return super().wait(gen, interval, timeout)
        start = time.monotonic()
        try:
            return super().wait(gen, interval, limit)
        except psycopg.OperationalError:
            if time.monotonic() - start < limit:
                raise  # a real error, not our deadline
        raise self._expire(limit)

    def _expire(self, limit: float) -> psycopg.OperationalError:
        self._dl_expired = True
        try:
            # The server may still be reachable on a new connection (only this one's path is broken):
            # stop the statement there. Bounded, and never relied upon.
            self.cancel_safe(timeout=self._dl_cancel_timeout)
        except Exception as e:
            log.debug("datalayer: cancelling a statement past its deadline failed: %s", e)
        self.close()
        return psycopg.OperationalError(
            f"no answer from the server within {limit:g} s (STATEMENT_TIMEOUT + CONNECT_TIMEOUT); "
            "the connection was closed"
        )


# What a caller may have changed in a session, undone in one round trip (PgBouncer's DISCARD ALL, less
# DEALLOCATE ALL: the prepared statements are psycopg's own and stay valid).
_RESET_SESSION = (
    "CLOSE ALL; UNLISTEN *; RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP"
)


def reset_session(conn: DataLayerConnection) -> None:
    """Give a returned connection back as it was lent: autocommit, default transaction options and, if
    the caller used it directly, the session's settings, role, temporary tables, cursors and locks."""
    if not conn.autocommit:
        conn.set_autocommit(True)
    if conn.read_only is not None:
        conn.set_read_only(None)
    if conn.isolation_level is not None:
        conn.set_isolation_level(None)
    if conn.deferrable is not None:
        conn.set_deferrable(None)
    # Not behind a transaction pooler (_dl_begin set): the server session is shared between transactions
    # of many clients there, RESET ALL would undo the pooler's connect_query, pg_advisory_unlock_all
    # release another client's locks.
    if conn._dl_dirty and conn._dl_begin is None:
        conn.execute(_RESET_SESSION)
    conn._dl_dirty = False


def transaction_settings(settings: Settings) -> str | None:
    """The ``SET LOCAL`` statement (one round trip) that gives each transaction the session settings
    behind a transaction pooler; None without one (the ``options`` connection parameter carries them)."""
    if settings.pooler == "none":
        return None
    # The values are validated settings (durations, "UTC"); SET takes no bind parameters.
    return "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in settings.session_settings().items())
