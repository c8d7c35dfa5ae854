"""system_log partition upkeep: create day partitions ahead of time, keep them ahead, list them.

Each day is created in its own short transaction through ``datalayer_ensure_log_partition`` (a
SECURITY DEFINER function, so an application role without DDL rights can call it).

Partitions stay ahead without a cron job: every writer of system_log (``log_system_event``,
``system_log_repo.create`` and ``bulk_insert``, the log handler's writer thread) calls
``keep_ahead(db)``, which compares today with a per-process, per-database watermark ("every day
through X has its partition"). Only when fewer than ``REFRESH_WITHIN`` days ahead are known does it
look at the catalogue and create what is missing, on a connection of its own in a background thread
(never in the caller's transaction; a failure is logged and never reaches the caller's write).

``keep_ahead`` does no I/O on the caller's connection, so the async writers (``datalayer.aio``) call
the very same function with a ``psycopg.AsyncConnection``: the check is a comparison, and a top-up
runs in its thread on a sync connection of its own, so the event loop never waits for it. The
whole-table maintenance here (``ensure_log_partitions``, ``list_log_partitions``) stays sync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import attrs
import psycopg
from psycopg.conninfo import make_conninfo

from datalayer import sql
from datalayer.errors import ValidationError
from datalayer.project import builtin_sql_dir
from datalayer.transactions import transaction

__all__ = [
    "DEFAULT_AHEAD",
    "EARLIEST_DAY",
    "MAX_AHEAD",
    "LogPartition",
    "PartitionKeeper",
    "check_ahead",
    "ensure_log_partitions",
    "keep_ahead",
    "list_log_partitions",
    "partition_days",
    "partition_name",
    "set_keeper",
]

log = logging.getLogger("datalayer")

MAX_AHEAD = 366
# The first day a partition may be made for (datalayer_ensure_log_partition refuses earlier ones).
EARLIEST_DAY = date(1970, 1, 1)
# Days of partitions kept ahead of today (UTC) by setup_database, yoyo's post-apply and the writers.
DEFAULT_AHEAD = 7
# The writers top partitions up when fewer days than this are known to exist ahead of today.
REFRESH_WITHIN = 3
# After a failed top-up, writers leave the database alone for this long (seconds).
RETRY_AFTER = 60.0


@attrs.frozen
class LogPartition:
    name: str
    day: date | None  # None for the default partition
    estimated_rows: int
    total_bytes: int


_q = sql.load(builtin_sql_dir() / "maintenance.sql")
_ensure = _q.bind("ensure_log_partition", bool)
_list = _q.bind("log_partitions", LogPartition)
_log_q = sql.load(builtin_sql_dir() / "system_log.sql")
_existing = _log_q.bind("day_partitions_among", str)


def partition_name(day: date) -> str:
    """The name of the partition holding the rows of one UTC day (``system_log_p20261203``)."""
    return f"system_log_p{day:%Y%m%d}"


def partition_days(ahead: int, *, today: date | None = None) -> list[date]:
    """The UTC days from today to ``ahead`` days ahead."""
    start = today or datetime.now(UTC).date()
    return [start + timedelta(days=i) for i in range(ahead + 1)]


def check_ahead(ahead: object, name: str = "ahead") -> int:
    """A number of days ahead to keep partitions for, or ValidationError."""
    if type(ahead) is not int or not 0 <= ahead <= MAX_AHEAD:
        raise ValidationError({name: f"must be an integer between 0 and {MAX_AHEAD}"})
    return ahead


def ensure_log_partitions(db: psycopg.Connection[Any], *, ahead: int = DEFAULT_AHEAD, today: date | None = None) -> int:
    """Create the missing day partitions from today (UTC) to ``ahead`` days ahead; returns how many it created.

    Rows already waiting in the default partition for those days move into them. ``today`` defaults
    to the current UTC day.
    """
    check_ahead(ahead)
    if today is not None and (type(today) is not date):
        raise ValidationError({"today": "must be a date"})
    days = partition_days(ahead, today=today)
    present = set(_existing.many(db, names=[partition_name(d) for d in days]))
    created = 0
    for day in days:
        if partition_name(day) in present:
            continue
        # One transaction per day: every lock the function takes is held until COMMIT.
        with transaction(db):
            if _ensure.scalar(db, day=day):
                created += 1
    return created


def list_log_partitions(db: psycopg.Connection[Any]) -> list[LogPartition]:
    """Every partition of system_log (the default one last), with size estimates."""
    return _list.many(db)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# Either API's connection: the keeper reads only its connection parameters (no round trip).
_AnyConnection = psycopg.Connection[Any] | psycopg.AsyncConnection[Any]


def _database_key(db: _AnyConnection) -> tuple[bytes, ...]:
    pgconn = db.pgconn
    return (pgconn.host, pgconn.port, pgconn.db, pgconn.options)


def _params_of(db: _AnyConnection) -> dict[str, str]:
    """``db``'s connection parameters (password included), for a connection of the keeper's own."""
    params = {o.keyword.decode(): o.val.decode() for o in db.pgconn.info if o.val is not None}
    params["application_name"] = "datalayer-partitions"
    return params


class PartitionKeeper:
    """Keeps system_log's day partitions ``ahead`` days ahead of ``clock`` for this process's writers.

    ``check(db)`` is what the writers call: a comparison with a per-database watermark, and nothing
    else until partitions ahead run short. ``clock`` returns an aware datetime (injectable for tests).
    """

    def __init__(
        self,
        *,
        ahead: int = DEFAULT_AHEAD,
        refresh_within: int = REFRESH_WITHIN,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 0 <= refresh_within <= ahead <= MAX_AHEAD:
            raise ValidationError({"refresh_within": f"must be between 0 and ahead ({ahead})"})
        self.ahead = ahead
        self.refresh_within = refresh_within
        self.clock = clock
        self.created = 0  # partitions this keeper created
        self.failures = 0
        self._through: dict[tuple[bytes, ...], date] = {}
        self._retry_at: dict[tuple[bytes, ...], float] = {}
        self._busy: set[tuple[bytes, ...]] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def check(self, db: _AnyConnection, *, background: bool = True) -> None:
        """Top partitions up if fewer than ``refresh_within`` days ahead are known; never raises.

        ``background``: do it on a connection of its own in a thread (for a caller's connection, and
        always for an async one); ``False`` does it now on ``db``, which must be an idle sync
        connection in autocommit (the log handler's writer).
        """
        try:
            key = _database_key(db)
            today = self.clock().date()
            through = self._through.get(key)
            if through is not None and (through - today).days >= self.refresh_within:
                return
            with self._lock:
                if key in self._busy or time.monotonic() < self._retry_at.get(key, 0.0):
                    return
                self._busy.add(key)
            if not background and isinstance(db, psycopg.Connection):
                self._top_up(key, today, db, None)
                return
            thread = threading.Thread(
                target=self._top_up, args=(key, today, None, _params_of(db)), name="datalayer-partitions", daemon=True
            )
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()
        except Exception as e:  # upkeep must never fail a write
            log.warning("datalayer: keeping system_log partitions ahead failed: %s", e)

    def _top_up(
        self,
        key: tuple[bytes, ...],
        today: date,
        db: psycopg.Connection[Any] | None,
        params: dict[str, str] | None,
    ) -> None:
        try:
            if db is not None:
                created = ensure_log_partitions(db, ahead=self.ahead, today=today)
            else:
                # No prepared statements: the parameters may lead through a transaction pooler.
                conninfo = make_conninfo("", **(params or {}))
                with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None) as own:
                    created = ensure_log_partitions(own, ahead=self.ahead, today=today)
            with self._lock:
                self.created += created
                self._through[key] = max(self._through.get(key, today), today + timedelta(days=self.ahead))
        except Exception as e:
            with self._lock:
                self.failures += 1
                self._retry_at[key] = time.monotonic() + RETRY_AFTER
            log.warning(
                "datalayer: could not create system_log partitions ahead (%s: %s); rows of days without a "
                "partition land in system_log_default until it works (datalayer partitions maintain)",
                type(e).__name__,
                e,
            )
        finally:
            with self._lock:
                self._busy.discard(key)

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait for background top-ups to finish (tests, shutdown); True when none is left running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in threads)


_keeper = PartitionKeeper()


def keep_ahead(db: _AnyConnection, *, background: bool = True) -> None:
    """Called by the writers of system_log: cheap unless partitions ahead run short (see module doc)."""
    _keeper.check(db, background=background)


def set_keeper(keeper: PartitionKeeper) -> PartitionKeeper:
    """Install the keeper the writers use (a service with its own clock, tests); returns the previous one."""
    global _keeper
    previous, _keeper = _keeper, keeper
    return previous
