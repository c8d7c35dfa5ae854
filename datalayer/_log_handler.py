"""``SystemLogHandler``: a logging handler writing to system_log from a thread of its own.

>>> handler = SystemLogHandler(service="billing")                                       # doctest: +SKIP
>>> logging.getLogger().addHandler(handler)

The handler never blocks the code that logs, a thread or an event loop: ``emit`` only cleans the
record into a row and puts it in a bounded buffer (no lock held across I/O, no wait); a background
thread writes batches with COPY through the default pool (the one the application or the test
plugin installed), or through ``pool=``. When the buffer is full (the database is slow or gone), new
records are dropped and counted (``handler.dropped``); ``emit`` never raises. A record the database
refuses is isolated (the batch is split until the refused record is alone), dropped and counted
(``handler.rejected``); the rest of its batch and every later record are written. Only transient
failures (connection lost, pool timeout, server shutting down) are retried. ``close()`` flushes with
a timeout and reports on stderr how many records could not be written.

One handler serves sync and async applications alike (its writer is a thread, whatever the caller
runs), so it has no async twin: ``datalayer.events`` and ``datalayer.aio`` both export it.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from typing import Any

import orjson
import psycopg

from datalayer._log_record import clean_service, record_row
from datalayer._translate import is_connection_lost
from datalayer.defaults import default_pool, on_exit
from datalayer.errors import CommitUnknown, TransientError
from datalayer.partitions import keep_ahead
from datalayer.pool import checkout, give_back
from datalayer.repos import system_log as system_log_repo
from datalayer.transactions import transaction

__all__ = ["SystemLogHandler"]


def _batch_landed(db: Any, batch: list[tuple[Any, ...]]) -> bool:
    """True when the rows of ``batch`` are in system_log (its COMMIT went through after all)."""
    first = batch[0]
    times = [row[0] for row in batch]
    return system_log_repo.record_landed(
        db, record_id=orjson.loads(first[4])["record_id"], service=first[1], first=min(times), last=max(times)
    )


def _transient(e: BaseException) -> bool:
    """Worth retrying the same rows: the failure was the connection's or the server's, not the rows'."""
    if isinstance(e, TransientError | CommitUnknown):
        return True
    return isinstance(e, psycopg.Error) and is_connection_lost(e)


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


_handlers: weakref.WeakSet[SystemLogHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_handlers):
        handler._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SystemLogHandler(logging.Handler):
    """A ``logging.Handler`` that batches records into system_log with COPY from a background thread.

    ``capacity`` bounds the buffer; ``batch_size`` and ``flush_interval`` (seconds) shape the batches.
    Without ``pool`` the writer uses the default pool (``datalayer.default_pool()``), looked up
    for every batch: it follows whatever the application or the test plugin installed with
    ``set_default_pool``. Counters: ``written``, ``dropped`` (buffer full), ``rejected`` (refused by the
    database, isolated and dropped), ``late`` (emitted after ``close()``).
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
        self.service = clean_service(service)
        self.pool = pool
        self.batch_size = max(int(batch_size), 1)
        self.flush_interval = flush_interval
        self.close_timeout = close_timeout
        self.dropped = 0
        self.rejected = 0
        self.late = 0  # records emitted after close(), not written
        self.written = 0
        self.capacity = capacity
        self._record_prefix = uuid.uuid4().hex[:12]
        self._record_seq = itertools.count()
        self._stop = threading.Event()
        self._closed = False
        self._fresh_state()
        _handlers.add(self)
        # At exit: flush before the pools close and an embedded server stops, and in any case when the
        # interpreter exits (atexit runs in reverse order: whichever comes first does the work).
        on_exit(self.close)
        atexit.register(self.close)
        # Start connecting now, in the background: records logged right before exit still get written.
        self._start()

    def _fresh_state(self) -> None:
        # A deque, not a queue.Queue: append and popleft are atomic under the GIL, so emit takes no lock.
        self._buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self._in_flight = 0  # rows the writer took and has not written yet (only the writer changes it)
        self._wake = threading.Event()
        self._count_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _reset_after_fork(self) -> None:
        # The writer thread does not exist in a forked child, and the parent writes what was buffered
        # before the fork: the child starts empty, with a writer of its own on its first record.
        self._fresh_state()
        self._record_prefix = uuid.uuid4().hex[:12]

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
            row = record_row(
                record,
                service=self.service,
                level=_level_name(record.levelno),
                record_id=f"{self._record_prefix}{next(self._record_seq)}",
                formatter=self.formatter,
            )
        except Exception:  # record_row cleans everything; this is the last net
            with self._count_lock:
                self.rejected += 1
            self.handleError(record)
            return
        if not buffer:
            self._wake.set()
        buffer.append(row)
        if self._thread is None:
            # No thread to be had now (RuntimeError): the row waits, and a later emit or drain starts one.
            with contextlib.suppress(RuntimeError):
                self._start()

    # ------------------------------------------------------------------------------- the writer

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="datalayer-log-writer", daemon=True)
                try:
                    self._thread.start()
                except RuntimeError:
                    self._thread = None  # never started: the next emit or drain tries again
                    raise

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
        while True:
            try:
                self._write_loop()
                return
            except Exception as e:  # a bug here must not end the writer: log records would pile up unseen
                with self._count_lock:
                    self.rejected += self._in_flight  # the rows it held are gone with it
                self._in_flight = 0
                self._complain(f"the writer failed ({type(e).__name__}: {e}); restarting it")
                self._stop.wait(0.5)
                if self._stop.is_set():
                    if time.monotonic() > self._deadline:
                        return
                    time.sleep(0.05)

    def _write_loop(self) -> None:
        todo: list[list[tuple[Any, ...]]] = []  # the taken batch, or the parts of a split one, in order
        unknown = False  # the last attempt's COMMIT outcome is unknown: look before writing again
        delay = 0.2
        while True:
            if not todo:
                if self._stop.is_set() and not self._buffer:
                    return
                batch = self._take_batch()
                if not batch:
                    continue
                todo.append(batch)
            batch = todo[0]
            try:
                pool = self.pool if self.pool is not None else default_pool()
                db = checkout(pool)
            except Exception as e:
                failure = f"cannot reach the database ({type(e).__name__}: {e})"
            else:
                try:
                    keep_ahead(db, background=False)
                    if not (unknown and _batch_landed(db, batch)):  # if it did commit, writing again duplicates
                        with transaction(db):
                            system_log_repo.copy_rows(db, batch)
                    failure = ""
                except Exception as e:
                    if not _transient(e):
                        unknown = False
                        todo[:1] = self._isolate(batch, e)
                        continue
                    unknown = unknown or isinstance(e, CommitUnknown)
                    failure = f"writing {len(batch)} log records failed ({type(e).__name__})"
                finally:
                    give_back(pool, db)
            if failure:
                if self._stop.is_set() and time.monotonic() > self._deadline:
                    return
                self._complain(f"{failure}; retrying")
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            unknown = False
            todo.pop(0)
            self.written += len(batch)  # only this thread writes it
            self._in_flight -= len(batch)

    def _isolate(self, batch: list[tuple[Any, ...]], error: Exception) -> list[list[tuple[Any, ...]]]:
        """The parts to write instead of a batch the database refused: halves, or none for one record."""
        if len(batch) > 1:
            half = len(batch) // 2
            return [batch[:half], batch[half:]]
        with self._count_lock:
            self.rejected += 1
        self._in_flight -= 1
        self._complain(f"dropped a log record the database refused ({type(error).__name__}: {str(error)[:200]})")
        return []

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
        """Wait until every accepted record is written or refused (True) or ``timeout`` seconds pass (False)."""
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
        lost = self.pending()
        if lost or self.dropped or self.rejected:  # records emitted after close (other exit hooks) are only counted
            print(
                f"datalayer SystemLogHandler: {lost} log records could not be written to system_log "
                f"before close, {self.dropped} were dropped because the buffer was full, "
                f"{self.rejected} were refused by the database",
                file=sys.stderr,
            )
        super().close()
