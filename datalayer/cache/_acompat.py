"""The cache's async/sync pairs that involve redis (datalayer.cache is the only importer of redis).

``tools/async_to_sync.py`` renames each async name here to its sync twin (``ARedis`` -> ``Redis``,
``aredis_client`` -> ``redis_client``, ``aclose_redis`` -> ``close_redis``). ``redis.asyncio.Redis``
cannot be renamed by the tool itself: it renames single names, and a dotted name is several (renaming
``asyncio`` would rename every other use of it). The pairs that do not involve redis live in
``datalayer._acompat``.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as _ARetry
from redis.backoff import NoBackoff
from redis.retry import Retry as _Retry

__all__ = ["ARedis", "Redis", "aclose_redis", "aredis_client", "close_redis", "redis_client"]

Redis = redis.Redis
ARedis = redis.asyncio.Redis


def redis_client(url: str, **options: Any) -> Redis:
    """A client of ``url`` that never retries: a failed call opens the cache's breaker instead."""
    return Redis.from_url(url, retry=_Retry(NoBackoff(), 0), **options)


def aredis_client(url: str, **options: Any) -> ARedis:
    """An asyncio client of ``url`` that never retries: a failed call opens the cache's breaker instead."""
    return ARedis.from_url(url, retry=_ARetry(NoBackoff(), 0), **options)


def close_redis(thing: Any) -> None:
    """Close a client or a pub/sub connection."""
    thing.close()


async def aclose_redis(thing: Any) -> None:
    """Close an asyncio client or pub/sub connection."""
    await thing.aclose()
