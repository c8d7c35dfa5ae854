"""What datalayer learns about a connection without a round trip, and the limits that make a silent
server show: shared as is by the sync and the async connection classes (nothing here waits).

The deadline does not depend on the peer answering: psycopg polls the socket with a timeout of its
own, so a partition, a blackhole or a half-open connection ends the wait on time.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import pq

from datalayer._validators import duration_ms
from datalayer.config import Settings

__all__ = ["alive_idle", "known_dead", "network_params", "wait_limit"]

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


def _events(conn: psycopg.BaseConnection[Any]) -> int:
    poller = select.poll()
    poller.register(conn.pgconn.socket, _EVENTS)
    found = poller.poll(0)
    return found[0][1] if found else 0


def alive_idle(conn: psycopg.BaseConnection[Any]) -> bool:
    """True unless the idle connection (sync or async) is known dead, learnt without a round trip.

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


def known_dead(conn: psycopg.BaseConnection[Any]) -> bool:
    """True when a connection in use (sync or async) is known dead before anything more is sent on it.

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
