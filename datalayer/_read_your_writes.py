"""Read-your-writes for replica reads: what a replica must have replayed before it serves this context.

The mark lives in a holder that ``connection()`` (and ``connection(replica=True)``) puts in the current
``contextvars`` context when it has none: tasks and threads started inside that context (asyncio.gather,
TaskGroup, asyncio.to_thread, a ``contextvars.copy_context().run``) copy a reference to the same
holder, so a child's write is seen by the parent's later reads, and the other way round. A context
that got no holder before it forked (nothing entered ``connection()`` in it) gives its children each
their own: their writes are not seen by it.

A write with replicas configured marks the holder with the primary's WAL position read on the writing
connection right after it (``transactions_async.written``); without, it marks it PENDING and the first
replica read asks the primary (``datalayer._replicas_async``). A replica serves the context's reads once
it has replayed the mark; a read waits for that at most once per mark (``waited``): after a wait that
failed, reads go to the primary until a health check shows a replica has replayed it. The mark is
cleared once every usable replica has replayed it.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["PENDING", "WAL_INSERTED", "Mark", "current", "hold", "note_write"]

# The context wrote and the primary's WAL position after it is not known yet.
PENDING = -1
# The primary's WAL position now, in bytes from 0/0: past the end of every write of this session that
# returned (a COMMIT's record is inserted before the COMMIT returns).
WAL_INSERTED = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8"


class Mark:
    """What this context's replica reads need: ``lsn`` 0 (nothing written), PENDING, or a WAL position."""

    __slots__ = ("lsn", "waited")

    def __init__(self) -> None:
        self.lsn = 0
        self.waited = False  # a read waited for a replica to replay ``lsn`` and none did in time

    def wrote(self, lsn: int) -> None:
        # PENDING stays: the position the first read learns then is past every write before it.
        self.lsn = PENDING if PENDING in (lsn, self.lsn) else max(self.lsn, lsn)
        self.waited = False

    def resolve(self, lsn: int) -> None:
        """The primary's WAL position learnt after this context's last write."""
        if self.lsn == PENDING:
            self.lsn = lsn

    def replayed(self) -> None:
        """Every usable replica has replayed the mark: reads need nothing more."""
        self.lsn, self.waited = 0, False


_mark: ContextVar[Mark | None] = ContextVar("datalayer_replica_mark", default=None)


def hold() -> Mark:
    """The current context's mark holder, made here if it has none (children made after share it)."""
    mark = _mark.get()
    if mark is None:
        mark = Mark()
        _mark.set(mark)
    return mark


def current() -> Mark | None:
    """The current context's mark holder, if any."""
    return _mark.get()


def note_write(lsn: int = PENDING) -> None:
    """Mark the current context as having written: ``lsn`` the WAL position after it, or PENDING."""
    hold().wrote(lsn)
