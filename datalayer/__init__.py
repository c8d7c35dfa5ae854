"""datalayer: a lightweight, SQL-first data layer for Python services.

SQL lives in ``sql/*.sql``; typed functions wrap each named query and return frozen attrs records
over psycopg 3 connections from a psycopg_pool pool.

>>> from datalayer import connection, user_repo
>>> with connection() as db:                                                 # doctest: +SKIP
...     user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
"""

from datalayer.config import Settings
from datalayer.contracts import check
from datalayer.errors import (
    CacheUnavailable,
    CommitUnknown,
    ConfigError,
    DataLayerError,
    IntegrityConflict,
    MigrationError,
    MultipleRowsFound,
    NotFound,
    PoolExhausted,
    QueryError,
    TransientError,
    ValidationError,
)
from datalayer.health import check_database_health
from datalayer.migrate import migration_status, plan_sql, reset_database, setup_database
from datalayer.partitions import ensure_log_partitions, list_log_partitions
from datalayer.passwords import hash_password, needs_rehash, verify_password
from datalayer.pool import close_default_pool, connection, default_pool, get_db, open_pool, set_default_pool
from datalayer.records import OffsetPage, Page, User
from datalayer.repos import users as user_repo
from datalayer.rows import attrs_row
from datalayer.transactions import on_commit, on_rollback, transaction
from datalayer.validation import validate_analysis_data, validate_user_data

__all__ = [
    "CacheUnavailable",
    "CommitUnknown",
    "ConfigError",
    "DataLayerError",
    "IntegrityConflict",
    "MigrationError",
    "MultipleRowsFound",
    "NotFound",
    "OffsetPage",
    "Page",
    "PoolExhausted",
    "QueryError",
    "Settings",
    "TransientError",
    "User",
    "ValidationError",
    "attrs_row",
    "check",
    "check_database_health",
    "close_default_pool",
    "connection",
    "default_pool",
    "ensure_log_partitions",
    "get_db",
    "hash_password",
    "list_log_partitions",
    "migration_status",
    "needs_rehash",
    "on_commit",
    "on_rollback",
    "open_pool",
    "plan_sql",
    "reset_database",
    "set_default_pool",
    "setup_database",
    "transaction",
    "user_repo",
    "validate_analysis_data",
    "validate_user_data",
    "verify_password",
]

__version__ = "0.1.0"
