"""System events: ``log_system_event`` and ``SystemLogHandler``, a logging handler writing to system_log.

>>> log_system_event(db, service="billing", level="ERROR", message="charge failed",   # doctest: +SKIP
...                  details={"invoice": 42})

>>> handler = SystemLogHandler(service="billing")                                       # doctest: +SKIP
>>> logging.getLogger().addHandler(handler)

The handler never blocks the code that logs: ``emit`` puts the record in a bounded buffer and returns;
a background thread writes batches with COPY. When the buffer is full (the database is slow or gone),
new records are dropped and counted (``handler.dropped``). ``close()`` flushes with a timeout and
reports on stderr how many records could not be written.
"""

from __future__ import annotations

import atexit
import collections
import itertools
import logging
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg import Connection

from datalayer import _jsonb
from datalayer.errors import CommitUnknown
from datalayer.records import SystemLogEntry
from datalayer.repos import system_log as system_log_repo
from datalayer.transactions import transaction

__all__ = ["SystemLogHandler", "log_system_event"]

_FORMATTER = logging.Formatter()
_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "EXCEPTION": "ERROR"}
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def log_system_event(
    db: Connection[Any],
    *,
    service: str,
    level: str,
    message: str,
    details: dict[str, Any] | None = None,
    user_id: int | None = None,
) -> SystemLogEntry:
    """Write one event to system_log now and return it (``level`` is case-insensitive; WARN means WARNING)."""
    if isinstance(level, str):
        level = _LEVEL_ALIASES.get(level.upper(), level.upper())
    return system_log_repo.create(db, service=service, level=level, message=message, details=details, user_id=user_id)


def _batch_landed(db: Any, batch: list[tuple[Any, ...]]) -> bool:
    """True when the rows of ``batch`` are in system_log (its COMMIT went through after all)."""
    first = batch[0]
    times = [row[0] for row in batch]
    return system_log_repo.record_landed(
        db, record_id=orjson.loads(first[4])["record_id"], service=first[1], first=min(times), last=max(times)
    )


def _open_handler_pool() -> Any:
    import attrs

    from datalayer.config import Settings
    from datalayer.pool import open_pool

    settings = Settings.from_env()
    return open_pool(attrs.evolve(settings, pool_size=1, max_overflow=1, pool_min_size=1), name="datalayer-log")


def _level_name(levelno: int) -> str:
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    return "DEBUG"


def _jsonable(value: Any) -> Any:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)[:1000]
    return value


class SystemLogHandler(logging.Handler):
    """A ``logging.Handler`` that batches records into system_log with COPY from a background thread.

    ``capacity`` bounds the buffer; ``batch_size`` and ``flush_interval`` (seconds) shape the batches.
    Without ``pool`` the handler opens a small pool of its own from the environment, in its writer
    thread (never in the caller's), so that closing the default pool at exit does not cut its last flush.
    """

    def __init__(
        self,
        service: str = "app",
        *,
        level: int = logging.NOTSET,
        pool: Any = None,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        close_timeout: float = 5.0,
    ) -> None:
        super().__init__(level)
        self.service = service[:100] or "app"
        self.pool = pool
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self.dropped = 0
        self.late = 0  # records emitted after close(), not written
        self.written = 0
        self.capacity = capacity
        # A deque, not a queue.Queue: append and popleft are atomic under the GIL, so emit takes no lock.
        self._buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self._in_flight = 0  # rows the writer took and has not written yet (only the writer changes it)
        self._wake = threading.Event()
        self._count_lock = threading.Lock()
        self._record_prefix = uuid.uuid4().hex[:12]
        self._record_seq = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._own_pool: Any = None
        from datalayer.embedded import before_embedded_stop

        # At exit: flush before an embedded server stops, and in any case when the interpreter exits
        # (atexit runs in reverse order: whichever comes first does the work, the other finds it done).
        before_embedded_stop(self.close)
        atexit.register(self.close)
        # Start connecting now, in the background: records logged right before exit still get written.
        self._start()

    # ----------------------------------------------------------------------------- the caller's side

    def emit(self, record: logging.LogRecord) -> None:
        writer = self._thread
        if writer is not None and record.thread == writer.ident:
            return  # the writer's own driver and pool logging: writing it would feed itself forever
        if self._closed:
            with self._count_lock:
                self.late += 1
            return
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            with self._count_lock:
                self.dropped += 1
            return
        try:
            row = self._row(record)
        except Exception:
            self.handleError(record)
            return
        if not buffer:
            self._wake.set()
        buffer.append(row)
        if self._thread is None:
            self._start()

    def _row(self, record: logging.LogRecord) -> tuple[Any, ...]:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        details: dict[str, Any] = {
            "logger": record.name,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
            "process": record.process,
            # A unique id per record: after a COMMIT whose outcome is unknown, the writer looks for it
            # instead of writing the batch twice.
            "record_id": f"{self._record_prefix}{next(self._record_seq)}",
        }
        if record.exc_info:
            details["exception"] = (self.formatter or _FORMATTER).formatException(record.exc_info)[:20_000]
        user_id = None
        extra = record.__dict__.keys() - _STANDARD_ATTRS  # the caller's extra= fields
        if extra:
            for key in extra:
                if key == "user_id":
                    user_id = record.__dict__[key]
                elif not key.startswith("_") and key not in details:
                    details[key] = _jsonable(record.__dict__[key])
        if type(user_id) is not int or not 0 < user_id < 2**63:
            user_id = None
        text = _jsonb.dumps(details).decode()
        if "\\u0000" in text:
            text = text.replace("\\u0000", "\\ufffd")
        if "\x00" in message:
            message = message.replace("\x00", "\ufffd")
        return (
            datetime.fromtimestamp(record.created, UTC),
            self.service,
            _level_name(record.levelno),
            message[: system_log_repo.MAX_MESSAGE_CHARS],
            text,
            user_id,
        )

    # ------------------------------------------------------------------------------- the writer

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="datalayer-log-writer", daemon=True)
                self._thread.start()

    def _take_batch(self) -> list[tuple[Any, ...]]:
        buffer = self._buffer
        if not buffer:
            self._wake.clear()
            if not buffer:
                self._wake.wait(self.flush_interval)
        batch: list[tuple[Any, ...]] = []
        while buffer and len(batch) < self.batch_size:
            batch.append(buffer.popleft())
        self._in_flight = len(batch)
        return batch

    def _run(self) -> None:
        from datalayer.pool import connection

        pool = self.pool
        delay = 0.2
        while pool is None and not self._stop.is_set():
            try:
                pool = self._own_pool = _open_handler_pool()
            except Exception as e:
                self._complain(f"cannot reach the database yet ({type(e).__name__}: {e}); retrying")
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        if pool is None:
            return
        batch: list[tuple[Any, ...]] = []
        unknown = False  # the last attempt's COMMIT outcome is unknown: look before writing again
        delay = 0.2
        while True:
            if not batch:
                if self._stop.is_set() and not self._buffer:
                    return
                batch = self._take_batch()
                if not batch:
                    continue
            try:
                with connection(pool) as db:
                    if unknown and _batch_landed(db, batch):
                        pass  # it did commit: writing it again would duplicate it
                    else:
                        with transaction(db):
                            system_log_repo.copy_rows(db, batch)
            except Exception as e:
                unknown = unknown or isinstance(e, CommitUnknown)
                if self._stop.is_set() and time.monotonic() > self._deadline:
                    return
                self._complain(f"writing {len(batch)} log records failed ({type(e).__name__}); retrying")
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            unknown = False
            self.written += len(batch)  # only this thread writes it
            self._in_flight = 0
            batch = []

    _last_complaint = 0.0
    _deadline = 0.0

    def _complain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_complaint > 30:
            self._last_complaint = now
            print(f"datalayer SystemLogHandler: {text}", file=sys.stderr)

    # --------------------------------------------------------------------------------- lifecycle

    def pending(self) -> int:
        """Records accepted but not yet written."""
        return len(self._buffer) + self._in_flight

    def flush(self) -> None:
        """Wait (at most ``close_timeout`` seconds) until every accepted record is written."""
        self.drain()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every accepted record is written (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        while self.pending() and time.monotonic() < deadline:
            if self._thread is None:
                self._start()
            time.sleep(0.01)
        return self.pending() == 0

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting records, write what is buffered within ``timeout`` (``close_timeout``) seconds,
        and report on stderr how many records could not be written."""
        if self._closed:
            return
        self._closed = True
        wait = self.close_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + wait
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait)
        if self._own_pool is not None:
            self._own_pool.close(timeout=1.0)
        lost = self.pending()
        if lost or self.dropped:  # records emitted after close (other exit hooks logging) are only counted
            print(
                f"datalayer SystemLogHandler: {lost} log records could not be written to system_log "
                f"before close, {self.dropped} were dropped because the buffer was full",
                file=sys.stderr,
            )
        super().close()
