"""The cache's async/sync pairs that involve redis (datalayer.cache is the only importer of redis).

``tools/async_to_sync.py`` renames each async name here to its sync twin (``ARedis`` -> ``Redis``,
``ARedisCluster`` -> ``RedisCluster``, ``AClient`` -> ``Client``, ``aredis_client`` -> ``redis_client``,
``aredis_cluster_client`` -> ``redis_cluster_client``, ``aclose_redis`` -> ``close_redis``,
``aclose_seeds`` -> ``close_seeds``).
``redis.asyncio.Redis`` cannot be renamed by the tool itself: it renames single names, and a dotted
name is several (renaming ``asyncio`` would rename every other use of it). The pairs that do not involve redis live in
``datalayer._acompat``.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as _ARetry
from redis.backoff import NoBackoff
from redis.retry import Retry as _Retry

__all__ = [
    "REDIS_ERRORS",
    "AClient",
    "ARedis",
    "ARedisCluster",
    "Client",
    "Redis",
    "RedisCluster",
    "aclose_redis",
    "aclose_seeds",
    "aredis_client",
    "aredis_cluster_client",
    "close_redis",
    "close_seeds",
    "redis_client",
    "redis_cluster_client",
]

Redis = redis.Redis
ARedis = redis.asyncio.Redis
RedisCluster = redis.RedisCluster
ARedisCluster = redis.asyncio.RedisCluster
Client = Redis | RedisCluster
AClient = ARedis | ARedisCluster
# What a call fails with when Redis is unreachable: the cluster client's "no node answers" (and its
# "cannot be connected" when it is made) is not a RedisError.
REDIS_ERRORS = (redis.RedisError, redis.RedisClusterException, OSError)


def redis_client(url: str, **options: Any) -> Redis:
    """A client of ``url`` that never retries: a failed call opens the cache's breaker instead."""
    return Redis.from_url(url, retry=_Retry(NoBackoff(), 0), **options)


def aredis_client(url: str, **options: Any) -> ARedis:
    """An asyncio client of ``url`` that never retries: a failed call opens the cache's breaker instead."""
    return ARedis.from_url(url, retry=_ARetry(NoBackoff(), 0), **options)


def redis_cluster_client(url: str, **options: Any) -> RedisCluster:
    """A client of the Redis Cluster that ``url`` is a node of, retrying nothing (like ``redis_client``).
    It connects when it is made (RedisClusterException when no node answers)."""
    return RedisCluster.from_url(url, retry=_Retry(NoBackoff(), 0), **options)


def aredis_cluster_client(url: str, **options: Any) -> ARedisCluster:
    """An asyncio client of the Redis Cluster that ``url`` is a node of, retrying nothing."""
    return ARedisCluster.from_url(url, retry=_ARetry(NoBackoff(), 0), **options)


def close_seeds(seeds: list[Any]) -> None:
    """Close the connections a cluster client opened to its seed nodes (``startup_nodes``): it replaces
    those nodes once it has learnt the cluster's and never closes them itself."""
    for node in seeds:
        if node.redis_connection is not None:
            node.redis_connection.connection_pool.disconnect()


async def aclose_seeds(seeds: list[Any]) -> None:
    """Close the connections an asyncio cluster client opened to its seed nodes (see ``close_seeds``)."""
    for node in seeds:
        await node.disconnect()


def close_redis(thing: Any) -> None:
    """Close a client or a pub/sub connection."""
    thing.close()
    if isinstance(thing, RedisCluster):
        # A cluster client made from a URL gives each node a client over a pool of its own, which the
        # node client's close() leaves open.
        for node in thing.get_nodes():  # type: ignore[no-untyped-call]
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()


async def aclose_redis(thing: Any) -> None:
    """Close an asyncio client or pub/sub connection."""
    await thing.aclose()
