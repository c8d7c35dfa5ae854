"""Where the tools find the database when their caller names none.

The tools (migrations, health, check) sit below the process defaults, which know about the default
pool and the embedded server. The defaults register their answers here when they are imported (the
``datalayer`` package imports them first), so no tool imports upward.
"""

from __future__ import annotations

from collections.abc import Callable

from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError

__all__ = ["default_target", "provide", "resolve_database"]

Resolver = Callable[[Settings], DatabaseTarget]
_default_target: Resolver | None = None
_resolve_database: Resolver | None = None


def provide(*, default_target: Resolver, resolve_database: Resolver) -> None:
    """Called once by ``datalayer.defaults``."""
    global _default_target, _resolve_database
    _default_target, _resolve_database = default_target, resolve_database


def _configured(settings: Settings) -> DatabaseTarget:
    if settings.database is None:
        raise ConfigError("no database configured; set DATABASE_URL or pass target=", variable="DATABASE_URL")
    return settings.database


def default_target(settings: Settings) -> DatabaseTarget:
    """The open default pool's database, else the configured one, else the embedded one."""
    return (_default_target or _configured)(settings)


def resolve_database(settings: Settings) -> DatabaseTarget:
    """The configured database, else the embedded one (started on demand)."""
    return (_resolve_database or _configured)(settings)
