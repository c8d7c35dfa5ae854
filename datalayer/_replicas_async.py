"""Read replicas: ``connection(replica=True)`` lends a connection of a healthy streaming replica of the
pool's database (DATABASE_REPLICA_URLS), else of the primary. One source for both APIs: ``_replicas.py``
(sync) is generated from this file.

- Health: at most once a second while replica reads happen (and every second while a replica
  connection is lent), a check in the background (a task; threads in sync code), never in a reader's
  way, asks the primary and every replica at once, each on a connection of its own, and waits
  CHECK_TIMEOUT for the answers. A replica that does not answer in time or cannot be reached, is not in
  recovery (promoted: its data may have diverged), belongs to another cluster (system_identifier) or is
  more than REPLICA_MAX_LAG bytes of WAL behind is skipped until a check finds it healthy again; one
  that does not answer also has the sockets of its lent connections shut, so that a read in flight on
  it fails at once and runs again on the primary. Lag is measured in WAL bytes, not replay time.
- Read-your-writes (``_read_your_writes``): in a context that wrote, a replica serves reads only once it
  has replayed the WAL position the write left; a read waits up to REPLICA_WAIT for that, once per
  write, else it is lent a connection of the primary.
- A replica connection serves reads only, wherever it landed, so that code behaves the same whatever the
  replicas' health: query functions that write are refused before they are sent, ``transaction()`` is
  refused, a primary connection lent for reads has a read-only session (not behind a transaction
  pooler), and a read lost with its replica runs again on the primary (the execution layer reads
  ``_dl_primary``). A replica that lends no connection within REPLICA_CHECKOUT seconds is skipped for
  that read and checked again at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import psycopg

from datalayer._acompat import asleep, aspawn
from datalayer._environ import DATABASE_REPLICAS
from datalayer._pooled_async import AsyncDataLayerConnection
from datalayer._read_your_writes import PENDING, Mark, hold
from datalayer._replica_server_async import (
    FLUSHED,
    POSITION,
    SYSTEM,
    Server,
    close_quietly,
    left,
    named,
    read_only_session,
    replayed,
    row,
    shut,
)
from datalayer._translate import translate
from datalayer.config import Settings
from datalayer.errors import DataLayerError, ValidationError
from datalayer.pool_async import AsyncDataLayerPool, checkout, connect, give_back, open_pool

__all__ = [
    "CHECK_INTERVAL",
    "CHECK_TIMEOUT",
    "REPLICA_CHECKOUT",
    "AsyncReplicaSet",
    "replica_connection",
    "replicas_of",
]

log = logging.getLogger("datalayer")

# How often a replica's health is checked while replica reads happen (seconds, at most).
CHECK_INTERVAL = 1.0
# How long a health check waits for a server's answer (connect and query) before it skips the server:
# a frozen replica (stopped process, lost host) costs a read at most CHECK_INTERVAL + CHECK_TIMEOUT.
CHECK_TIMEOUT = 1.0
# How long a read waits for a replica's pool before it goes to the primary (the replica is then checked).
REPLICA_CHECKOUT = 1.0

_sets_lock = threading.Lock()


class AsyncReplicaSet:
    """The replicas of one pool's database: their pools (opened once found healthy), health and choice."""

    def __init__(self, primary: AsyncDataLayerPool) -> None:
        self.primary = primary
        settings = primary.settings
        # The replicas' pools keep one connection open and grow under load as the primary's does.
        self._settings: Settings = attrs.evolve(settings, pool_min_size=1, replicas=())
        (variable,) = DATABASE_REPLICAS
        self._replicas = [
            Server(target, f"{primary.name}-replica-{i}", f"{variable} entry {i}")
            for i, target in enumerate(settings.replicas, 1)
        ]
        # The health check's questions are bounded by CHECK_TIMEOUT, not by the pools' deadlines.
        self._probe_settings = attrs.evolve(self._settings, connect_timeout=math.ceil(CHECK_TIMEOUT))
        self._primary_probe = Server(primary.target, f"{primary.name}-primary", "DATABASE_URL")
        self._system: int | None = None  # the primary's system_identifier, once known
        self._lent_lock = threading.Lock()
        self._checking = threading.Lock()  # one check at a time; taken without waiting
        self._checked_at = -CHECK_INTERVAL
        self._turn = 0
        self._closed = False

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncDataLayerConnection]:
        """Lend a connection for reads: a healthy replica's, else the primary's."""
        replica, conn = await self._lend(timeout)
        conn._dl_primary = self.primary
        if replica is None:
            await self._read_only(conn)
        try:
            yield conn
        finally:
            conn._dl_primary = None
            if replica is None:
                await give_back(self.primary, conn)
            else:
                await self._give_back(replica, conn)

    async def _read_only(self, conn: AsyncDataLayerConnection) -> None:
        """Lend a primary connection for reads only (read_only_session): give it back if that fails."""
        try:
            await read_only_session(conn, self.primary.settings)
        except psycopg.Error as e:
            await give_back(self.primary, conn)
            raise translate(e, conn=conn) from e

    async def _give_back(self, replica: Server, conn: AsyncDataLayerConnection) -> None:
        with self._lent_lock:
            replica.lent.discard(conn)
        if conn.closed or conn.broken:
            self._checked_at = -CHECK_INTERVAL  # lost with its replica: check them now
        if replica.pool is not None:
            await give_back(replica.pool, conn)
        else:  # the set was closed meanwhile
            await close_quietly(conn)

    async def _lend(self, timeout: float | None) -> tuple[Server | None, AsyncDataLayerConnection]:
        if not self._replicas:
            return None, await checkout(self.primary, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout  # bounds every wait below
        self._check_when_due()
        usable = [r for r in self._replicas if r.usable and r.pool is not None]
        mark = hold()
        if not usable:
            return None, await checkout(self.primary, left(deadline))
        if mark.lsn > 0 and all(r.replayed >= mark.lsn for r in usable):
            mark.replayed()  # nothing left to wait for, in this context or the ones sharing its mark
        if mark.lsn and self.primary.settings.replica_wait <= 0:
            return None, await checkout(self.primary, left(deadline))
        if mark.lsn == PENDING:
            mark.resolve(await self._primary_position(left(deadline)))
        needed = mark.lsn
        self._turn = (self._turn + 1) % len(usable)
        turn = usable[self._turn :] + usable[: self._turn]
        chosen = next((r for r in turn if r.replayed >= needed), None)
        if chosen is None and mark.waited:  # one wait per mark: the primary until a check sees it replayed
            return None, await checkout(self.primary, left(deadline))
        chosen = chosen or turn[0]
        conn = await self._replica_conn(chosen, mark, deadline)
        return (chosen, conn) if conn is not None else (None, await checkout(self.primary, left(deadline)))

    async def _primary_position(self, timeout: float | None) -> int:
        """How far the primary's WAL is flushed now: past every COMMIT this context saw return."""
        conn = await checkout(self.primary, timeout)
        try:
            (flushed,) = await row(conn, FLUSHED)
        except psycopg.Error as e:
            raise translate(e, conn=conn) from e
        finally:
            await give_back(self.primary, conn)
        return flushed if isinstance(flushed, int) else 0

    async def _replica_conn(
        self, replica: Server, mark: Mark, deadline: float | None
    ) -> AsyncDataLayerConnection | None:
        """A connection of ``replica`` once it has replayed ``needed`` (within REPLICA_WAIT), else None."""
        pool = replica.pool
        if pool is None:
            return None
        needed = mark.lsn
        try:
            conn = await checkout(pool, min(left(deadline) or REPLICA_CHECKOUT, REPLICA_CHECKOUT))
        except (DataLayerError, psycopg.Error) as e:
            log.debug("datalayer: replica %s lent no connection: %s", replica.target.display, e)
            self._checked_at = -CHECK_INTERVAL
            return None
        with self._lent_lock:  # from here a health check that finds the replica frozen frees it
            replica.lent.add(conn)
        if replica.replayed >= needed or await self._caught_up(replica, conn, needed, deadline):
            return conn
        mark.waited = True
        await self._give_back(replica, conn)
        return None

    async def _caught_up(
        self, replica: Server, conn: AsyncDataLayerConnection, needed: int, until: float | None
    ) -> bool:
        deadline = time.monotonic() + self.primary.settings.replica_wait
        deadline = deadline if until is None else min(deadline, until)
        delay = 0.002
        try:
            while True:
                _, replica.replayed = await replayed(conn)
                if replica.replayed >= needed:
                    return True
                if time.monotonic() + delay > deadline:
                    return False
                await asleep(delay)
                delay = min(delay * 2, 0.05)
        except psycopg.Error as e:
            log.debug("datalayer: replica %s could not say how far it replayed: %s", replica.target.display, e)
            return False

    def _check_when_due(self) -> None:
        if not self._closed and self._checking.acquire(blocking=False):
            aspawn(self._check_loop, name="datalayer-replica-check")

    async def _check_loop(self) -> None:
        """Check now, and again every CHECK_INTERVAL while replica connections are lent: a read in
        flight on a replica that stopped answering is cut off by the check, and runs again on the primary."""
        try:
            while not self._closed:
                while time.monotonic() < self._checked_at + CHECK_INTERVAL and not self._closed:
                    await asleep(0.02)  # a connection lost with its replica makes it due at once
                if self._closed:
                    break
                self._checked_at = time.monotonic()
                await self._check_all()
                with self._lent_lock:
                    lent = any(r.lent for r in self._replicas)
                if not lent:
                    break
        except Exception:  # a background check must not die silently, nor raise into the loop
            log.exception("datalayer: checking the replicas failed")
        finally:
            self._checking.release()
            with self._lent_lock:
                lent = any(r.lent for r in self._replicas)
            if lent:  # lent while this loop decided to end: watch it
                self._check_when_due()

    async def _check_all(self) -> None:
        """Ask the primary and every replica at once; a server that has not answered within
        CHECK_TIMEOUT is skipped (its probe still running, it is not asked again until it ends)."""
        servers: list[Server] = [self._primary_probe, *self._replicas]
        for server in servers:
            if not server.probing:
                server.probing, server.facts, server.problem = True, None, None
                aspawn(partial(self._ask, server), name="datalayer-replica-probe")
        deadline = time.monotonic() + CHECK_TIMEOUT
        while any(s.probing for s in servers) and time.monotonic() < deadline:
            await asleep(0.005)
        primary = self._primary_probe
        if primary.probing or primary.facts is None:
            self._cut_off(primary)
            flushed = None  # the last lag known stands
        else:
            flushed = primary.facts[1]
        for replica in self._replicas:
            problem = self._problem(replica, flushed)
            if problem is not None and replica.probing:
                self._cut_off(replica)  # frozen or unreachable: free what waits on it
            elif problem is None and replica.pool is None and not replica.opening:
                replica.opening = True
                aspawn(partial(self._open, replica), name="datalayer-replica-open")
            self._verdict(replica, problem)

    def _problem(self, replica: Server, flushed: int | None) -> str | None:
        if replica.probing:
            return f"it did not answer within {CHECK_TIMEOUT:g} s"
        if replica.facts is None:
            return replica.problem or "it cannot be reached"
        in_recovery, replica.replayed, system = replica.facts
        known = self._primary_probe.facts[2] if self._primary_probe.facts is not None else self._system
        if known is not None:
            self._system = known
        if system is not None and self._system is not None and system != self._system:
            return (
                f"it belongs to another cluster (system_identifier {system}, the primary's is {self._system}): "
                f"check {replica.setting}"
            )
        if not in_recovery:
            return "it is not in recovery (promoted, or not a replica): its data may differ from the primary's"
        if flushed is not None:
            replica.lag = max(flushed - replica.replayed, 0)
        limit = self._settings.replica_max_lag
        if replica.lag > limit:
            return f"it is {replica.lag} bytes of WAL behind the primary (REPLICA_MAX_LAG is {limit})"
        return None

    async def _ask(self, server: Server) -> None:
        """One server's facts: in recovery, WAL position (the primary's flushed, a replica's replayed),
        system_identifier (read once per probe connection)."""
        try:
            if server.probe is None or server.probe.closed:
                server.probe = await connect(self._probe_settings, server.target)
                server.system = None
                if self._closed:  # closed while it connected
                    await close_quietly(server.probe)
                    server.probe = None
                    return
            if server.system is None:
                (system,) = await row(server.probe, SYSTEM)
                server.system = system if isinstance(system, int) else 0
            in_recovery, position = await row(server.probe, POSITION)
            server.facts = (
                bool(in_recovery),
                position if isinstance(position, int) else 0,
                server.system or None,
            )
        except (DataLayerError, psycopg.Error) as e:
            server.problem = f"it cannot be reached ({named(e, server)})"
            probe, server.probe = server.probe, None
            await close_quietly(probe)
        finally:
            server.probing = False

    async def _open(self, replica: Server) -> None:
        try:
            pool = await open_pool(self._settings, target=replica.target, name=replica.name)
        except (DataLayerError, psycopg.Error) as e:
            self._verdict(replica, f"its pool could not be opened ({named(e, replica)})")
            return
        finally:
            replica.opening = False
        if self._closed:
            await close_quietly(pool)
        else:
            replica.pool = pool

    def _cut_off(self, server: Server) -> None:
        """Shut the sockets of ``server``'s probe and lent connections: what waits on them gets an error
        at once (a read lent by a replica then runs again on the primary)."""
        with self._lent_lock:
            for conn in [server.probe, *server.lent]:
                if conn is not None:
                    shut(conn)

    def _verdict(self, replica: Server, problem: str | None) -> None:
        usable = problem is None and not self._closed
        if problem is not None and (replica.usable or not replica.checked):
            log.warning("datalayer: replica %s is skipped: %s", replica.target.display, problem)
        elif usable and not replica.usable and replica.checked:
            log.info("datalayer: replica %s serves reads again", replica.target.display)
        replica.usable, replica.checked = usable, True

    async def close(self) -> None:
        """Close the replicas' pools and the health check's connections."""
        self._closed = True
        deadline = time.monotonic() + self.primary.settings.connect_timeout
        while self._checking.locked() and time.monotonic() < deadline:  # a check running: let it end
            await asleep(0.01)
        pools = []
        for server in [self._primary_probe, *self._replicas]:
            if server.probing:
                self._cut_off(server)  # a question still waiting on a frozen server
            pool, probe, server.pool, server.probe, server.usable = server.pool, server.probe, None, None, False
            await close_quietly(probe)
            if pool is not None:
                pools.append(pool)
        # At loop shutdown psycopg_pool's workers are cancelled with us, and a pool's close() stops at
        # waiting for them before it closes its idle connections: close those first, every pool's.
        for pool in pools:
            for _ in range(pool.get_stats().get("pool_available", 0)):
                try:
                    conn = await pool.getconn(timeout=0.01)
                except Exception:  # none left idle
                    break
                await close_quietly(conn)  # not given back: the pool would log each one it discards
        for pool in pools:
            await close_quietly(pool)


def replicas_of(pool: AsyncDataLayerPool) -> AsyncReplicaSet:
    """The replica set of ``pool`` (made on first use, closed with the pool)."""
    found = pool.replicas
    if isinstance(found, AsyncReplicaSet):
        return found
    with _sets_lock:
        if not isinstance(pool.replicas, AsyncReplicaSet):
            pool.replicas = AsyncReplicaSet(pool)
        made: AsyncReplicaSet = pool.replicas
        return made


@asynccontextmanager
async def replica_connection(
    pool: AsyncDataLayerPool, *, timeout: float | None = None
) -> AsyncIterator[AsyncDataLayerConnection]:
    """Borrow a connection for reads from a healthy replica of ``pool``'s database, else from ``pool``.

    Without replicas configured it is a connection of ``pool`` that serves reads only.
    """
    if not isinstance(pool, AsyncDataLayerPool):
        wanted = AsyncDataLayerPool.__name__
        raise ValidationError({"pool": f"must be a {wanted} (open_pool()), got {type(pool).__name__}"})
    async with replicas_of(pool).connection(timeout) as conn:
        yield conn
