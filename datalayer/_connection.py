"""The class of every pooled connection: a deadline on every wait for the server, and a look at the
socket that tells a dead connection without a round trip.

The deadline does not depend on the peer answering: psycopg's ``Connection.wait`` polls the socket with
a timeout of its own, so a partition, a blackhole or a half-open connection ends the wait on time.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.abc import PQGen

from datalayer._validators import duration_ms
from datalayer.config import Settings

__all__ = ["DataLayerConnection", "alive_idle", "known_dead", "network_params", "wait_limit"]

log = logging.getLogger("datalayer")
RV = TypeVar("RV")

# Hang-up, error, or the peer's half-close (FIN: over TCP this is how a server that closed shows).
_GONE = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
_EVENTS = select.POLLIN | _GONE


def wait_limit(settings: Settings) -> float | None:
    """The longest one wait for the server may last: STATEMENT_TIMEOUT + CONNECT_TIMEOUT (None if unlimited).

    The server cancels a statement itself at STATEMENT_TIMEOUT; CONNECT_TIMEOUT more is the slack a
    healthy network needs to deliver that answer. A call that has no answer by then never will.
    """
    statement = duration_ms(settings.statement_timeout) / 1000
    return statement + settings.connect_timeout if statement > 0 else None


def network_params(settings: Settings) -> dict[str, str]:
    """libpq's TCP liveness parameters, derived from CONNECT_TIMEOUT (unix sockets ignore them).

    Keepalives make the kernel notice a silent peer of an idle or waiting connection after about
    twice CONNECT_TIMEOUT (an idle pooled connection then shows as dead when it is lent);
    ``tcp_user_timeout`` drops a connection whose sent bytes stay unacknowledged for CONNECT_TIMEOUT.
    """
    t = settings.connect_timeout
    return {
        "keepalives": "1",
        "keepalives_idle": str(t),
        "keepalives_interval": "1",
        "keepalives_count": str(t),
        "tcp_user_timeout": str(t * 1000),
    }


def _events(conn: psycopg.Connection[Any]) -> int:
    poller = select.poll()
    poller.register(conn.pgconn.socket, _EVENTS)
    found = poller.poll(0)
    return found[0][1] if found else 0


def alive_idle(conn: psycopg.Connection[Any]) -> bool:
    """True unless the idle connection is known dead, learnt without a round trip to the server.

    An idle connection has nothing to read: anything readable is the server closing it (restart,
    ``pg_terminate_backend``: an error message, then EOF — over TCP the EOF may come as a separate
    segment, so a readable socket cannot be trusted to be alive) or a stray notification. Either way
    it is not lent: it is replaced.
    """
    if conn.closed or conn.broken:
        return False
    try:
        return _events(conn) == 0
    except (OSError, ValueError):
        return False


def known_dead(conn: psycopg.Connection[Any]) -> bool:
    """True when a connection in use is known dead before anything more is sent on it.

    Unlike ``alive_idle`` a readable socket is not enough (a notice may wait): dead means hung up,
    half-closed by the server, or broken once the waiting input is read.
    """
    if conn.closed or conn.broken:
        return True
    try:
        events = _events(conn)
        if not events:
            return False
        if events & _GONE:
            return True
        conn.pgconn.consume_input()
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return conn.pgconn.status != pq.ConnStatus.OK


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
        conn.autocommit = True
    if conn.read_only is not None:
        conn.read_only = None
    if conn.isolation_level is not None:
        conn.isolation_level = None
    if conn.deferrable is not None:
        conn.deferrable = None
    if conn._dl_dirty:
        conn.execute(_RESET_SESSION)
        conn._dl_dirty = False
