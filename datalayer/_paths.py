"""Where sql/ and migrations/ are: inside the wheel, or at the top of a source checkout."""

from __future__ import annotations

from pathlib import Path

__all__ = ["migrations_dir", "sql_dir"]

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"datalayer cannot find its {name}/ directory (looked in {packaged} and {checkout})")


def sql_dir() -> Path:
    """The directory of named query files."""
    return _find("sql")


def migrations_dir() -> Path:
    """The directory of yoyo migrations."""
    return _find("migrations")
