"""The built-in schema's facts, in one place: its tables in foreign-key order, which field each
constraint guards, the statuses, the log levels and the id bounds.

Backup/restore, roles, stats, error translation, the repositories and the validators all read them
from here; ``tests/test_registry.py`` compares them with the catalog of a freshly migrated database,
so a table or constraint added by a migration and forgotten here fails a test instead of silently
going unbacked-up, ungranted or unnamed. Importing this module registers them
(``datalayer.registry.register``).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg

from datalayer import sql
from datalayer.project import builtin_sql_dir
from datalayer.registry import DayPartitions, Derived, Registry, Table, register
from datalayer.text import email_key

__all__ = [
    "CONSTRAINT_FIELDS",
    "LEVELS",
    "MAX_ID",
    "MIN_ID",
    "REGISTRY",
    "STATUSES",
    "TABLES",
    "ensure_log_partition",
]

# data_analyses.status and tool_generations.status (their *_status_check constraints).
STATUSES = ("pending", "running", "completed", "failed")
# system_log.level (system_log_level_check).
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Every id column is a bigint identity starting at 1.
MIN_ID = 1
MAX_ID = 2**63 - 1

_ensure_partition = sql.load(builtin_sql_dir() / "maintenance.sql").bind("ensure_log_partition", bool)


def ensure_log_partition(db: psycopg.Connection[Any], day: date) -> bool:
    """Create system_log's partition for ``day`` unless it exists (through the definer function)."""
    return _ensure_partition.scalar(db, day=day)


# Parents before children; ties by name (what registry_from_catalog gives).
TABLES = (
    # Copies of whatever the application caches (cached users carry their password hashes).
    Table("cache_entries", readonly_hidden=True),
    # Invalidations waiting for Redis: meaningless in another database, so not backed up.
    Table("cache_invalidations", backed_up=False, readonly_hidden=True),
    # Append-only: retention deletes through a definer function.
    Table("system_log", append_only=True, day_partitions=DayPartitions("created_at", ensure_log_partition)),
    Table("users", secret_columns=("hashed_password",), derived={"email_key": Derived("email", email_key)}),
    Table("data_analyses", references=("users",)),
    Table("analysis_files", references=("data_analyses",)),
    Table("tool_generations", references=("users",)),
)

# Which input field each constraint guards, so that errors can point at the form field.
CONSTRAINT_FIELDS: dict[str, tuple[str, str]] = {
    "users_username_key": ("users", "username"),
    # The index of an older schema (before migration 0005), restored by its rollback.
    "users_email_lower_key": ("users", "email"),
    # On email_key, which is computed from email: the field a client typed is email.
    "users_email_key_key": ("users", "email"),
    "users_username_format": ("users", "username"),
    "users_email_format": ("users", "email"),
    "users_hashed_password_present": ("users", "hashed_password"),
    "data_analyses_user_id_fkey": ("data_analyses", "user_id"),
    "data_analyses_name_length": ("data_analyses", "name"),
    "data_analyses_type_length": ("data_analyses", "analysis_type"),
    "data_analyses_status_check": ("data_analyses", "status"),
    "data_analyses_lifecycle_check": ("data_analyses", "status"),
    "analysis_files_analysis_id_fkey": ("analysis_files", "analysis_id"),
    "analysis_files_filename_length": ("analysis_files", "filename"),
    "analysis_files_type_length": ("analysis_files", "file_type"),
    "analysis_files_size_check": ("analysis_files", "size_bytes"),
    "analysis_files_uri_length": ("analysis_files", "storage_uri"),
    "analysis_files_checksum_format": ("analysis_files", "checksum"),
    "tool_generations_user_id_fkey": ("tool_generations", "user_id"),
    "tool_generations_type_length": ("tool_generations", "tool_type"),
    "tool_generations_status_check": ("tool_generations", "status"),
    "tool_generations_lifecycle_check": ("tool_generations", "status"),
    "system_log_service_length": ("system_log", "service"),
    "system_log_level_check": ("system_log", "level"),
    "cache_entries_key_key": ("cache_entries", "key"),
    "cache_entries_key_length": ("cache_entries", "key"),
    "cache_entries_version_check": ("cache_entries", "version"),
    "cache_invalidations_kind_check": ("cache_invalidations", "kind"),
    "cache_invalidations_key_length": ("cache_invalidations", "key"),
}

REGISTRY = Registry(tables=TABLES, constraint_fields=CONSTRAINT_FIELDS)
register("datalayer", REGISTRY, builtin=True)
