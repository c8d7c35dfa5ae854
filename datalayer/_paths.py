"""Where the built-in sql/ and migrations/ are: thin names for :mod:`datalayer.project`'s finders."""

from __future__ import annotations

from pathlib import Path

from datalayer.project import builtin_migrations_dir, builtin_sql_dir

__all__ = ["migrations_dir", "sql_dir"]


def sql_dir() -> Path:
    """The built-in folder of named query files."""
    return builtin_sql_dir()


def migrations_dir() -> Path:
    """The built-in folder of yoyo migrations."""
    return builtin_migrations_dir()
