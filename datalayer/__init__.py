"""datalayer: a lightweight, SQL-first data layer for Python services.

SQL lives in ``sql/*.sql``; typed functions wrap each named query and return frozen attrs records
over psycopg 3 connections from a psycopg_pool pool.

>>> from datalayer import connection, user_repo
>>> with connection() as db:                                                 # doctest: +SKIP
...     user = user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
"""

from typing import TYPE_CHECKING, Any

from datalayer import builtin_schema as _builtin_schema  # noqa: F401 - registers the built-in schema's facts
from datalayer._connection import DataLayerConnection as Connection
from datalayer.backup import backup_database_data, restore_database_data
from datalayer.config import Settings
from datalayer.contracts import check
from datalayer.defaults import (  # importing it registers the exit order (flush, close pools, stop servers)
    close_default_pool,
    connection,
    default_pool,
    get_db,
    open_pool,
    set_default_pool,
    transaction,
)
from datalayer.errors import (
    BackupError,
    CacheUnavailable,
    CommitUnknown,
    ConfigError,
    DataLayerError,
    IllegalTransition,
    IntegrityConflict,
    MigrationError,
    MultipleRowsFound,
    NotFound,
    PoolExhausted,
    QueryError,
    TransientError,
    ValidationError,
)
from datalayer.events import SystemLogHandler, log_system_event
from datalayer.health import HealthReport, check_database_health
from datalayer.maintenance import cleanup_old_data, get_database_stats
from datalayer.migrate import migration_status, plan_sql, reset_database, setup_database
from datalayer.partitions import ensure_log_partitions, list_log_partitions
from datalayer.passwords import hash_password, needs_rehash, verify_password
from datalayer.records import (
    AnalysisFile,
    AnalysisWithFiles,
    CacheEntry,
    DataAnalysis,
    FileTypeTotal,
    OffsetPage,
    Page,
    SystemLogEntry,
    ToolGeneration,
    User,
)
from datalayer.repos import analyses as data_analysis_repo
from datalayer.repos import cache_entries as cache_entry_repo
from datalayer.repos import files as analysis_file_repo
from datalayer.repos import system_log as system_log_repo
from datalayer.repos import tool_generations as tool_generation_repo
from datalayer.repos import users as user_repo
from datalayer.rows import attrs_row
from datalayer.transactions import on_commit, on_rollback, run_in_transaction
from datalayer.validation import validate_analysis_data, validate_user_data

if TYPE_CHECKING:
    from datalayer.cache import CacheManager, get_cache_manager

__all__ = [
    "AnalysisFile",
    "AnalysisWithFiles",
    "BackupError",
    "CacheEntry",
    "CacheManager",
    "CacheUnavailable",
    "CommitUnknown",
    "ConfigError",
    "Connection",
    "DataAnalysis",
    "DataLayerError",
    "FileTypeTotal",
    "HealthReport",
    "IllegalTransition",
    "IntegrityConflict",
    "MigrationError",
    "MultipleRowsFound",
    "NotFound",
    "OffsetPage",
    "Page",
    "PoolExhausted",
    "QueryError",
    "Settings",
    "SystemLogEntry",
    "SystemLogHandler",
    "ToolGeneration",
    "TransientError",
    "User",
    "ValidationError",
    "analysis_file_repo",
    "attrs_row",
    "backup_database_data",
    "cache_entry_repo",
    "check",
    "check_database_health",
    "cleanup_old_data",
    "close_default_pool",
    "connection",
    "data_analysis_repo",
    "default_pool",
    "ensure_log_partitions",
    "get_cache_manager",
    "get_database_stats",
    "get_db",
    "hash_password",
    "list_log_partitions",
    "log_system_event",
    "migration_status",
    "needs_rehash",
    "on_commit",
    "on_rollback",
    "open_pool",
    "plan_sql",
    "reset_database",
    "restore_database_data",
    "run_in_transaction",
    "set_default_pool",
    "setup_database",
    "system_log_repo",
    "tool_generation_repo",
    "transaction",
    "user_repo",
    "validate_analysis_data",
    "validate_user_data",
    "verify_password",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The cache (and with it redis) is imported on first use, not with datalayer.
    if name in ("CacheManager", "get_cache_manager"):
        from datalayer import cache

        return getattr(cache, name)
    raise AttributeError(f"module 'datalayer' has no attribute {name!r}")
