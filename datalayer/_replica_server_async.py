"""One server of a replica set (a replica, or the primary as the health check sees it): its state and
the small operations on its connections (``datalayer._replicas_async`` decides with them)."""

from __future__ import annotations

import logging
import os
import socket
import time

import attrs
import psycopg

from datalayer._pooled_async import AsyncDataLayerConnection
from datalayer.config import DatabaseTarget, Settings
from datalayer.pool_async import AsyncDataLayerPool

__all__ = [
    "FLUSHED",
    "POSITION",
    "READ_ONLY",
    "REPLAYED",
    "SYSTEM",
    "Server",
    "close_quietly",
    "left",
    "named",
    "read_only_session",
    "replayed",
    "row",
    "shut",
]

log = logging.getLogger("datalayer")

# WAL positions as bytes from 0/0: what the primary has flushed (a COMMIT that returned is in it, with
# synchronous_commit on) and what a replica has replayed (NULL when it is not in recovery).
FLUSHED = "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8"
REPLAYED = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8"
# A health check's question to any server: the primary's flushed position, a replica's replayed one.
POSITION = (
    "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_flush_lsn() END - '0/0'::pg_lsn)::int8"
)
# A primary connection lent for reads: its transactions (an autocommit statement is one) refuse writes.
READ_ONLY = "SET SESSION default_transaction_read_only = on"
# Which cluster a server belongs to: a replica's must be the primary's (a standby of another is refused).
SYSTEM = "SELECT system_identifier FROM pg_control_system()"


@attrs.define(eq=False)
class Server:
    """A replica (or, for the health check, the primary): its pool, probe and last known health."""

    target: DatabaseTarget
    name: str
    setting: str  # where it is configured, for messages: "DATABASE_REPLICA_URLS entry 2"
    pool: AsyncDataLayerPool | None = None
    probe: AsyncDataLayerConnection | None = None  # the health check's own connection
    lent: set[AsyncDataLayerConnection] = attrs.field(factory=set)  # its connections lent now
    probing: bool = False  # a question of the health check is on its way
    opening: bool = False  # its pool is being opened
    facts: tuple[bool, int, int | None] | None = None  # in recovery, WAL position, system_identifier
    problem: str | None = None  # why the last question got no answer
    system: int | None = None  # system_identifier read on the probe connection (0: not readable)
    usable: bool = False
    checked: bool = False
    replayed: int = 0  # the replay position last seen (bytes)
    lag: int = 0  # bytes of WAL behind the primary at the last check that could ask the primary


async def row(conn: AsyncDataLayerConnection, query: str) -> tuple[object, ...]:
    dirty = conn._dl_dirty
    try:
        cur = await conn.execute(query)
        row = await cur.fetchone()
    finally:
        conn._dl_dirty = dirty  # reading WAL positions changes nothing the pool's reset must undo
    return tuple(row) if row is not None else ()


async def replayed(conn: AsyncDataLayerConnection) -> tuple[bool, int]:
    in_recovery, replayed = await row(conn, REPLAYED)
    return bool(in_recovery), replayed if isinstance(replayed, int) else 0


def left(deadline: float | None) -> float | None:
    """What is left of a caller's timeout (None: none given, the pool's own applies)."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.001)


def named(e: BaseException, server: Server) -> str:
    """The error's text, naming the setting where this server is configured."""
    return str(e).replace("check DATABASE_URL", f"check {server.setting}")


def shut(conn: AsyncDataLayerConnection) -> None:
    """Shut down the connection's socket under whoever waits on it (the waiter gets a lost connection)."""
    if conn.closed:
        return
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error) as e:
        log.debug("datalayer: shutting down a replica connection failed: %s", e)


async def read_only_session(conn: AsyncDataLayerConnection, settings: Settings) -> None:
    """Make a primary connection lent for reads refuse writes at the server too (``SELECT nextval()``,
    ``SELECT … FOR UPDATE``, a function that writes): the session's transactions are read-only until
    the pool's reset on return (RESET ALL: the execute marks the session changed). Not behind a
    transaction pooler, whose server sessions other clients share: there the query functions' refusal
    of writes is the only guard."""
    if settings.pooler == "none":
        await conn.execute(READ_ONLY)


async def close_quietly(thing: AsyncDataLayerConnection | AsyncDataLayerPool | None) -> None:
    if thing is None:
        return
    try:
        await thing.close()
    except Exception as e:  # closing what may already be broken
        log.debug("datalayer: closing %r failed: %s", thing, e)
