"""The exception tree: one root, subclasses that mean something to a caller.

Every exception keeps the driver's error as ``__cause__``. Messages are lower-case, name the object
and say what to do; they never contain a password or a parameter value marked secret.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BackupError",
    "CacheUnavailable",
    "CommitUnknown",
    "ConfigError",
    "DataLayerError",
    "IllegalTransition",
    "IntegrityConflict",
    "MigrationError",
    "MultipleRowsFound",
    "NotFound",
    "PoolExhausted",
    "QueryError",
    "TransientError",
    "ValidationError",
]


class DataLayerError(Exception):
    """Root of every error datalayer raises on purpose."""


class ConfigError(DataLayerError):
    """A setting is missing or malformed; ``variable`` names it."""

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class NotFound(DataLayerError):
    """A ``:one`` query, or a lookup by key, found no row."""


class MultipleRowsFound(DataLayerError):
    """A ``:one`` or ``:maybe`` query found more than one row."""


class ValidationError(DataLayerError):
    """Input failed validation; ``errors`` maps each field to a message."""

    def __init__(self, errors: Mapping[str, str], message: str | None = None) -> None:
        self.errors: dict[str, str] = dict(errors)
        if message is None:
            parts = "; ".join(f"{field}: {msg}" for field, msg in sorted(self.errors.items()))
            message = f"invalid input ({parts})"
        super().__init__(message)


class IntegrityConflict(DataLayerError):
    """A unique, foreign-key, check or not-null constraint refused the write.

    ``constraint`` is the PostgreSQL constraint name and ``field`` the input field it guards
    (``None`` where no single field is to blame).
    """

    def __init__(self, message: str, *, constraint: str | None, field: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint
        self.field = field


class IllegalTransition(IntegrityConflict):
    """A status move the lifecycle (pending -> running -> completed | failed) does not allow.

    ``current`` is the row's status, ``target`` the one asked for.
    """

    def __init__(self, message: str, *, current: str, target: str) -> None:
        super().__init__(message, constraint=None, field="status")
        self.current = current
        self.target = target


class QueryError(DataLayerError):
    """Any other PostgreSQL error; ``location`` is ``sql/<file>.sql:<line> <query>``."""

    def __init__(self, message: str, *, location: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.sqlstate = sqlstate


class TransientError(DataLayerError):
    """Safe to retry: the connection was lost before COMMIT, or a serialization failure or deadlock."""

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PoolExhausted(TransientError):
    """No connection became free within POOL_TIMEOUT."""


class CommitUnknown(DataLayerError):
    """The connection died while COMMIT was in flight: the write may or may not have landed.

    Reconcile by reading back what you wrote (by a client-made key) before retrying.
    """


class MigrationError(DataLayerError):
    """A migration failed, is locked, or an applied migration file changed since it was applied."""


class CacheUnavailable(DataLayerError):
    """Redis could not be reached and the caller asked for strict cache behaviour."""


class BackupError(DataLayerError):
    """A backup could not be written, or a backup file is not valid; ``line`` says where it broke."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
