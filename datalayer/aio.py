"""datalayer for asyncio: the same SQL files, records and rules as the sync API, awaited.

>>> from datalayer.aio import connection, user_repo                      # doctest: +SKIP
>>> async with connection() as db:
...     user = await user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)

Every function here is generated from (or is) the async source its sync twin is generated from
(``tools/async_to_sync.py``): there is no second copy to drift.
"""

from __future__ import annotations

# -- connections, transactions, process defaults (H-pool) --
# The async pool on the sync defaults' settings and database (one per event loop), its connections
# (annotate ``db`` with AsyncConnection), units of work with savepoints and hooks (a hook may be an
# ``async def``; ``await on_commit(...)``), and run_in_transaction's retries.
from datalayer._aio_defaults import (
    close_default_pool,
    connection,
    default_pool,
    get_db,
    open_pool,
    set_default_pool,
    transaction,
)
from datalayer._pooled_async import AsyncDataLayerConnection as AsyncConnection
from datalayer.pool_async import AsyncDataLayerPool
from datalayer.transactions_async import in_transaction, on_commit, on_rollback, run_in_transaction

# isort: split
# -- repositories (H-repos) --
# Awaitable: every function of the built-in repositories (one source, ``repos/<name>_async.py``; the
# sync ``datalayer.<name>_repo`` is generated from it). Their records, changes types and page types
# are the sync ones.
from datalayer.repos import analyses_async as data_analysis_repo
from datalayer.repos import cache_entries_async as cache_entry_repo
from datalayer.repos import files_async as analysis_file_repo
from datalayer.repos import tool_generations_async as tool_generation_repo
from datalayer.repos import users_async as user_repo

# isort: split

# -- events, validation-backed writes, maintenance (H-events) --
# Awaitable: system_log_repo's functions, log_system_event, hash_password, verify_password (argon2 runs
# in a worker thread). Shared as they are, since they do no I/O: the handler (its writer is a thread
# whatever the caller runs), LogEvent, needs_rehash and the validators, whose ``data`` goes straight
# into ``await user_repo.create_with_password(db, **data)`` / ``await data_analysis_repo.create(...)``.
from datalayer.events_async import SystemLogHandler, log_system_event
from datalayer.passwords_async import hash_password, needs_rehash, verify_password
from datalayer.repos import system_log_async as system_log_repo
from datalayer.repos.system_log_async import LogEvent
from datalayer.validation import validate_analysis_data, validate_user_data

# isort: split
# -- cache (H-cache) --
# Awaitable: the cache (on redis.asyncio; one per event loop), with the sync one's layers and guarantees;
# a loader may be an ``async def``. Close it at shutdown with ``await close_cache_manager()``.
from datalayer.cache.manager_async import AsyncCacheManager, close_cache_manager, get_cache_manager

__all__: list[str] = [
    "AsyncCacheManager",
    "AsyncConnection",
    "AsyncDataLayerPool",
    "LogEvent",
    "SystemLogHandler",
    "analysis_file_repo",
    "cache_entry_repo",
    "close_cache_manager",
    "close_default_pool",
    "connection",
    "data_analysis_repo",
    "default_pool",
    "get_cache_manager",
    "get_db",
    "hash_password",
    "in_transaction",
    "log_system_event",
    "needs_rehash",
    "on_commit",
    "on_rollback",
    "open_pool",
    "run_in_transaction",
    "set_default_pool",
    "system_log_repo",
    "tool_generation_repo",
    "transaction",
    "user_repo",
    "validate_analysis_data",
    "validate_user_data",
    "verify_password",
]
