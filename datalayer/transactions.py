# Generated from datalayer/transactions_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""Units of work: ``transaction()``, savepoints, and hooks that run after COMMIT or ROLLBACK.

One source for both APIs: ``datalayer.transactions`` (sync) is generated from this file; in async code
every call here but ``in_transaction`` and ``current_transaction`` is awaited, and a hook may be an
``async def`` (its result is awaited).

>>> with transaction(db):                                     # doctest: +SKIP
...     user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
...     on_commit(lambda: cache.invalidate_user_cache(user.id))   # only if the COMMIT succeeds

``transaction(db)`` runs on the connection given (``datalayer.transaction()``, without one, borrows
from the default pool: ``datalayer.defaults``). Nested ``transaction(db)`` blocks are savepoints. A
hook registered inside a savepoint that rolls back is dropped (its ``on_rollback`` hooks run); one
registered inside a savepoint that is released waits for the outermost COMMIT.
"""

from __future__ import annotations

import contextvars
import logging
import random
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg.pq import TransactionStatus

from datalayer._acompat import Hook, Job, call_hook, current_owner, sleep
from datalayer._kind import check_kind
from datalayer._liveness import known_dead
from datalayer._read_your_writes import PENDING, WAL_INSERTED, note_write
from datalayer._translate import SESSION_TIMEOUTS, is_connection_lost, lost_before_sending, never_sent, translate
from datalayer.errors import CommitUnknown, QueryError, TransientError, ValidationError

__all__ = [
    "RETRYABLE_STATES",
    "current_transaction",
    "in_transaction",
    "on_commit",
    "on_rollback",
    "run_in_transaction",
    "transaction",
]
# Our own generator: jitter never moves the global random state a service (or its tests) may seed.
_rng = random.Random()  # noqa: S311 - jitter, not secrets

# Serialization failure and deadlock: PostgreSQL rolled the whole transaction back; running it
# again from the start is the documented remedy.
RETRYABLE_STATES = ("40001", "40P01")
_ISOLATION = {"read committed": "READ COMMITTED", "repeatable read": "REPEATABLE READ", "serializable": "SERIALIZABLE"}

log = logging.getLogger("datalayer")

T = TypeVar("T")
C = TypeVar("C", bound=psycopg.Connection[Any])


class _Aborted(Exception):
    """A statement failed inside the block and its error was caught there (internal: a QueryError)."""


# What a block that swallowed a statement's error gets instead of a COMMIT that PostgreSQL would
# silently turn into a ROLLBACK.
_ABORTED = (
    "a statement in this transaction failed and its error was caught inside the block, so PostgreSQL "
    "aborted the transaction: nothing in it was committed. To go on after a statement that may fail, "
    "run that statement in its own nested transaction(db) block (a savepoint) and catch the error "
    "outside that block"
)


class _DeadBeforeCommit(Exception):
    """The connection died before COMMIT was sent (internal: becomes a TransientError)."""


@attrs.define
class _Frame:
    owner: object = None  # the task that opened it (async code)
    after_commit: list[tuple[Hook, bool]] = attrs.Factory(list)
    after_rollback: list[Hook] = attrs.Factory(list)


_frames: weakref.WeakKeyDictionary[psycopg.Connection[Any], list[_Frame]] = weakref.WeakKeyDictionary()
_current: contextvars.ContextVar[psycopg.Connection[Any] | None] = contextvars.ContextVar(
    "datalayer_transaction", default=None
)


def _key(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    # A get_db() lease and the pooled connection it stands for are one transaction, whichever is passed.
    conn: psycopg.Connection[Any] | None = getattr(db, "_dl_conn", None)
    return conn if conn is not None else db


def in_transaction(db: psycopg.Connection[Any]) -> bool:
    """True while ``db`` is inside a ``transaction()`` block."""
    return bool(_frames.get(_key(db)))


def current_transaction() -> psycopg.Connection[Any] | None:
    """The connection of the innermost ``transaction()`` open in this thread or task, if any."""
    db = _current.get()
    return db if db is not None and in_transaction(db) else None


def _frame_for(hook: Hook, db: psycopg.Connection[Any] | None) -> _Frame | None:
    if not callable(hook):
        raise ValidationError({"hook": "must be a function taking no arguments"})
    if db is not None:
        check_kind(db)
    db = db if db is not None else current_transaction()
    if db is None:
        return None
    frames = _frames.get(_key(db))
    return frames[-1] if frames else None


def on_commit(hook: Hook, db: psycopg.Connection[Any] | None = None, *, also_if_unknown: bool = False) -> None:
    """Run ``hook`` after the outermost COMMIT of the current transaction; at once when there is none.

    ``also_if_unknown``: run it too when the COMMIT's outcome is unknown (CommitUnknown); right for
    cache invalidation, where invalidating too much is harmless.
    """
    frame = _frame_for(hook, db)
    if frame is None:
        _run_hooks([hook])
    else:
        frame.after_commit.append((hook, also_if_unknown))


def on_rollback(hook: Hook, db: psycopg.Connection[Any] | None = None) -> None:
    """Run ``hook`` if the current transaction (or savepoint) rolls back; never when there is none."""
    frame = _frame_for(hook, db)
    if frame is not None:
        frame.after_rollback.append(hook)


def _run_hooks(hooks: list[Hook]) -> None:
    for hook in hooks:
        try:
            call_hook(hook)
        except Exception:
            # The transaction's outcome is settled; a failing hook must not turn it into an error.
            log.exception("datalayer: transaction hook %r failed", hook)


@contextmanager
def transaction(db: C) -> Iterator[C]:
    """Group statements on ``db`` into one unit of work: COMMIT at the end of the block, ROLLBACK on
    error; yields ``db``. Inside another ``transaction(db)`` block on the same connection it is a savepoint.

    ``datalayer.transaction()`` (no connection) borrows one from the default pool for the block.
    """
    check_kind(db, open_=True)
    if getattr(db, "_dl_primary", None) is not None:
        raise ValidationError(
            {
                "db": "is a replica connection (connection(replica=True)), which serves reads only; a unit "
                "of work belongs on the primary: use transaction(), or connection() and transaction(db)"
            }
        )
    frames = _frames.setdefault(_key(db), [])
    owner = current_owner()
    if frames and frames[0].owner is not owner:
        raise ValidationError(
            {
                "db": "is inside a transaction another task opened: a connection serves one task at a time "
                "(their statements would interleave in one transaction); take a connection of your own "
                "(connection())"
            }
        )
    frame = _Frame(owner=owner)
    frames.append(frame)
    token = _current.set(db)
    outermost = len(frames) == 1
    explicit_rollback = False
    body_done = False
    try:
        try:
            with db.transaction():
                begin: str | None = getattr(_key(db), "_dl_begin", None)
                if outermost and begin is not None:
                    _key(db).execute(begin)  # behind a transaction pooler: the session settings
                try:
                    yield db
                except psycopg.Rollback:
                    explicit_rollback = True
                    raise
                body_done = True
                if db.pgconn.transaction_status == TransactionStatus.INERROR:
                    raise _Aborted
                if outermost and known_dead(db):
                    # Closed by the server while the body ran: COMMIT would be sent to nobody, and its
                    # failure would look like a lost answer (CommitUnknown) when nothing can have committed.
                    raise _DeadBeforeCommit
        finally:
            frames.pop()
            _current.reset(token)
    except _DeadBeforeCommit:
        _run_hooks(frame.after_rollback)
        raise lost_before_sending() from None
    except _Aborted:
        _run_hooks(frame.after_rollback)
        raise QueryError(_ABORTED, sqlstate="25P02") from None
    except psycopg.Error as e:
        if (
            body_done
            and outermost
            and is_connection_lost(e, db)
            and not never_sent(e)
            and e.sqlstate not in SESSION_TIMEOUTS
        ):
            note_write()  # it may have committed: this context's replica reads wait for it
            _run_hooks([h for h, unknown in frame.after_commit if unknown])
            raise CommitUnknown(
                "the connection was lost during COMMIT: the transaction may or may not have committed; "
                "read back what you wrote before retrying"
            ) from e
        _run_hooks(frame.after_rollback)
        raise translate(e, conn=db) from e
    except BaseException:
        if body_done and outermost:
            # Cancelled (or interrupted) during COMMIT: it may have committed, so neither the commit
            # hooks nor the rollback hooks are right; the ones that accept an unknown outcome run.
            _run_hooks([h for h, unknown in frame.after_commit if unknown])
            raise
        _run_hooks(frame.after_rollback)
        raise
    if explicit_rollback:
        _run_hooks(frame.after_rollback)
    elif frames:
        parent = frames[-1]
        parent.after_commit.extend(frame.after_commit)
        parent.after_rollback.extend(frame.after_rollback)
    else:
        written(db)
        _run_hooks([h for h, _ in frame.after_commit])


def replicas_configured(db: psycopg.Connection[Any]) -> bool:
    """Whether ``db`` was lent by a pool with read replicas (its writes then read their WAL position)."""
    pool = getattr(db, "_pool", None)  # psycopg_pool's own attribute on the connections it lends
    return bool(getattr(getattr(pool, "settings", None), "replicas", ()))


def written(db: psycopg.Connection[Any]) -> None:
    """Mark the current context as having written on ``db`` (a COMMIT, or a write in autocommit), for
    its replica reads: with replicas configured, with the WAL position read on ``db`` right after the
    write (one round trip, no second connection); else PENDING (no round trip)."""
    if not replicas_configured(db):
        note_write()
        return
    dirty = getattr(db, "_dl_dirty", False)
    try:
        row = (db.execute(WAL_INSERTED)).fetchone()
    except psycopg.Error:  # the write stands; the first replica read asks the primary instead
        note_write()
        return
    finally:
        if hasattr(db, "_dl_dirty"):
            db._dl_dirty = dirty  # reading the WAL position changes nothing the pool's reset must undo
    note_write(row[0] if row is not None and isinstance(row[0], int) else PENDING)


def run_in_transaction(
    db: C,
    fn: Job[C, T],
    retries: int = 3,
    *,
    isolation: str | None = None,
    backoff: float = 0.05,
) -> T:
    """Run ``fn(db)`` in a transaction, running it again (up to ``retries`` more times, with jittered
    exponential backoff) when PostgreSQL reports a serialization failure or a deadlock.

    ``fn`` must be safe to run again: it is the whole unit of work, and side effects outside the
    database belong in ``on_commit`` hooks (they run once, after the successful attempt). In async
    code ``fn`` is an ``async def`` taking the connection.

    >>> def transfer(db):                                                   # doctest: +SKIP
    ...     ...
    >>> run_in_transaction(db, transfer, isolation="serializable")
    """
    check_kind(db, open_=True)
    if not callable(fn):
        raise ValidationError({"fn": "must be a function taking the connection"})
    if type(retries) is not int or not 0 <= retries <= 100:
        raise ValidationError({"retries": "must be an integer between 0 and 100"})
    if type(backoff) not in (int, float) or not 0 <= backoff <= 60:
        raise ValidationError({"backoff": "must be a number of seconds between 0 and 60"})
    level = None
    if isolation is not None:
        level = _ISOLATION.get(isolation.lower()) if isinstance(isolation, str) else None
        if level is None:
            raise ValidationError({"isolation": f"must be one of {', '.join(_ISOLATION)}"})
    if in_transaction(db):
        raise ValidationError(
            {"db": "is inside a transaction; pass a connection outside any (a retry restarts the whole transaction)"}
        )
    attempt = 0
    while True:
        try:
            with transaction(db):
                if level is not None:
                    db.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")  # one of three constants
                return fn(db)
        except TransientError as e:
            if e.sqlstate not in RETRYABLE_STATES or attempt >= retries:
                raise
            attempt += 1
            delay = backoff * (2 ** (attempt - 1)) * _rng.uniform(0.5, 1.5)
            log.info(
                "datalayer: %s; retrying the transaction (%d/%d) in %.0f ms", e.sqlstate, attempt, retries, delay * 1000
            )
            sleep(delay)
