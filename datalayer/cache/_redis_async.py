"""The Redis layer: short timeouts, no retries, a circuit breaker, and pub/sub invalidation.

redis-py's defaults (socket timeouts of seconds, several retries) make one GET against a hung Redis
take about a minute. Here a call waits at most ``timeout`` seconds; the first failure opens the
breaker, so every later call skips Redis at once until ``cooldown`` has passed and one call probes it
again. A successful probe after an outage runs ``on_recover`` (the manager bumps the global generation
there: values written before the outage may have missed invalidations).

The prober and the subscriber run in the background: daemon threads for the sync cache, tasks of the
event loop for the async one (started by the first call made in a running loop).

On a Redis Cluster (``RedisTarget.cluster``) every multi-key call stays in one hash slot (the keys'
``{tags}``); an invalidation runs each key's script as a call of its own (the cluster client refuses a
pipeline of scripts), and the subscriber listens on one node at a time (PUBLISH reaches every node),
moving to the next one when its node fails. One breaker covers the whole cluster.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis

from datalayer._acompat import AJob, ALock, ASignal, AThunk, aspawn
from datalayer.cache._acompat import (
    REDIS_ERRORS,
    AClient,
    ARedis,
    ARedisCluster,
    aclose_redis,
    aclose_seeds,
    aredis_client,
    aredis_cluster_client,
)
from datalayer.cache._breaker import Breaker, rejected
from datalayer.cache._cluster import node_urls
from datalayer.cache._markers import SKIPPED
from datalayer.cache._scripts import BUMP, CAS_SET, GENERATION, INVALIDATE, PUT, RELEASE
from datalayer.config import RedisTarget
from datalayer.errors import CacheUnavailable

__all__ = ["SKIPPED", "Breaker", "RedisLayer"]

log = logging.getLogger("datalayer.cache")
T = TypeVar("T")


class RedisLayer:
    """One Redis client with bounded calls, plus a background subscriber for invalidation messages."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        timeout: float,
        cooldown: float,
        strict: bool,
        on_recover: AThunk[None],
        on_message: Callable[[dict[str, Any]], None],
        channel: str,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.strict = strict
        # On a cluster one call that succeeds says only that its own master answers: the prober's ping
        # of every master decides when the breaker closes.
        self.breaker = Breaker(cooldown, calls_probe=not target.cluster)
        self.on_recover = on_recover
        self.on_message = on_message
        self.channel = channel
        self.stats = {"hits": 0, "misses": 0, "errors": 0, "skipped": 0, "writes": 0, "rejected": 0}
        password = target.password.value if target.password else None
        self._common: dict[str, Any] = {
            "password": password,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
            "client_name": "datalayer",
        }
        # Made on first use: a cluster client connects when it is made, and Redis may be down then.
        self._client: AClient | None = None
        self._client_lock = threading.Lock()
        self._seeds: list[Any] = []  # the cluster client adds its seed node here
        # The subscriber waits for messages: its reads may block, its connects may not.
        self._sub_client = aredis_client(target.url, socket_timeout=5.0, **self._common)
        self._sub_turn = 0
        self._stop = ASignal()
        self._probing = False
        self._prober_lock = ALock()
        self._subscriber_started = False
        self._subscriber_done = ASignal()
        self.subscribed = ASignal()

    @property
    def client(self) -> AClient:
        """The Redis (or Redis Cluster) client, made with its scripts on first use."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    options = {"socket_timeout": self.timeout, **self._common}
                    self._seeds.clear()  # those of an attempt that found no node answering
                    made: AClient = (
                        aredis_cluster_client(self.target.url, startup_nodes=self._seeds, **options)
                        if self.target.cluster
                        else aredis_client(self.target.url, **options)
                    )
                    self._cas = made.register_script(CAS_SET)
                    self._put = made.register_script(PUT)
                    self._invalidate = made.register_script(INVALIDATE)
                    self._bump = made.register_script(BUMP)
                    self._generation = made.register_script(GENERATION)
                    self._release = made.register_script(RELEASE)
                    self._client = made
                client = self._client
        return client

    # ------------------------------------------------------------------------------------- calls

    async def call(self, fn: AJob[AClient, T], *, on_rejected: Any = SKIPPED) -> T:
        """``fn(client)``, or SKIPPED when the breaker is open or the call fails (strict: CacheUnavailable);
        ``on_rejected`` when Redis refused the call itself (see ``rejected``: the breaker stays as it is)."""
        if not self._subscriber_started:
            self.start_subscriber()
        if not self.breaker.allow():
            return self._skipped()  # type: ignore[no-any-return]
        try:
            result = await fn(self.client)
        except REDIS_ERRORS as e:
            if rejected(e):
                return self._rejected(e, on_rejected)  # type: ignore[no-any-return]
            return await self._failed(e)  # type: ignore[no-any-return]
        await self._succeeded()
        return result

    def _rejected(self, e: BaseException, result: Any) -> Any:
        self.stats["rejected"] += 1
        if self.breaker.state == "half-open":  # this call was the probe, and it says nothing: probe again
            self.breaker.failure()
        log.error("datalayer cache: Redis refused a call (%s: %s)", type(e).__name__, e)
        if self.strict:
            raise CacheUnavailable(f"Redis at {self.target.display} refused a call: {e}") from e
        return result

    def _skipped(self) -> Any:
        self.stats["skipped"] += 1
        if self.strict:
            raise CacheUnavailable(f"Redis at {self.target.display} is unavailable (circuit open)")
        return SKIPPED

    async def _succeeded(self) -> None:
        if not self.breaker.calls_probe:  # a call begun before the breaker opened: the prober decides
            return
        if self.breaker.state != "closed" and self.breaker.success():
            log.warning("datalayer cache: Redis is back")
            await self.on_recover()

    async def _failed(self, e: BaseException) -> Any:
        """Record a failed call (the breaker opens) and return SKIPPED, or raise in strict mode."""
        self.stats["errors"] += 1
        self.breaker.failure()
        await self._start_prober()
        log.warning(
            "datalayer cache: Redis call failed (%s: %s); skipping Redis for %.1f s",
            type(e).__name__,
            e,
            self.breaker.cooldown,
        )
        if self.strict:
            raise CacheUnavailable(f"Redis at {self.target.display} failed: {type(e).__name__}") from e
        return SKIPPED

    async def _start_prober(self) -> None:
        # Probe in the background too: recovery (the generation bump that retires values which may have
        # missed invalidations) must not wait for the next cache call of this process.
        async with self._prober_lock:
            if self._probing:
                return
            self._probing = True
            try:
                aspawn(self._probe, name="datalayer-cache-probe")
            except RuntimeError:  # no thread (or no running event loop) to probe in: calls probe instead
                self._probing = False

    async def _probe(self) -> None:
        try:
            while not await self._stop.wait(self.breaker.cooldown):
                if self.breaker.state == "closed":
                    return
                try:
                    await self._ping_all()
                except REDIS_ERRORS:
                    self.breaker.failure()
                    continue
                if self.breaker.success():
                    log.warning("datalayer cache: Redis is back")
                    # Its calls may fail (a cluster node still joining): the breaker opens again while
                    # this prober still counts as running, so it must go on probing, not return.
                    await self.on_recover()
        finally:
            self._probing = False

    async def _ping_all(self) -> None:
        client = self.client
        if isinstance(client, ARedisCluster):
            # Every master, not one: the breaker must not close while some slots cannot be served.
            await client.ping(target_nodes=ARedisCluster.PRIMARIES)
        else:
            await client.ping()

    async def get(self, key: str) -> Any:
        # The hot path of every cache hit: the same as call(), without the closure.
        if not self._subscriber_started:
            self.start_subscriber()
        breaker = self.breaker
        if breaker.state != "closed" and not breaker.allow():
            return self._skipped()
        try:
            value = await self.client.get(key)
        except REDIS_ERRORS as e:
            if rejected(e):
                return self._rejected(e, SKIPPED)
            return await self._failed(e)
        if breaker.state != "closed":
            await self._succeeded()
        return value

    async def cas_set(self, key: str, version_key: str, expected: bytes | str | None, value: bytes, ttl_ms: int) -> Any:
        exp = expected.decode() if isinstance(expected, bytes) else (expected or "0")
        return await self.call(lambda c: self._cas(keys=[key, version_key], args=[exp, value, ttl_ms], client=c))

    async def put(self, key: str, version_key: str, value: bytes, ttl_ms: int) -> Any:
        return await self.call(lambda c: self._put(keys=[key, version_key], args=[value, ttl_ms], client=c))

    async def invalidate(
        self, pairs: list[tuple[str, str]], message: dict[str, Any], bumps: tuple[tuple[str, int], ...] = ()
    ) -> bool | None:
        """Invalidate (key, version key) pairs, move (counter, start) generations on, and tell the other
        processes; False if Redis was skipped or failed, None if it refused the call (see ``rejected``)."""

        async def run(c: AClient) -> bool:
            if isinstance(c, ARedisCluster):
                return await self._invalidate_on_cluster(c, pairs, message, bumps)
            pipe = c.pipeline(transaction=False)
            for key, version_key in pairs:
                await self._invalidate(keys=[key, version_key], client=pipe)
            for counter, start in bumps:
                await self._bump(keys=[counter], args=[start], client=pipe)
            pipe.publish(self.channel, orjson.dumps(message))
            await pipe.execute()
            return True

        done = await self.call(run, on_rejected=None)
        return None if done is None else done is True

    async def _invalidate_on_cluster(
        self,
        c: ARedisCluster,
        pairs: list[tuple[str, str]],
        message: dict[str, Any],
        bumps: tuple[tuple[str, int], ...],
    ) -> bool:
        # One call per script: the cluster client refuses a pipeline of them. Not atomic either way: a
        # failure leaves the whole invalidation to the replay (running it twice is harmless: a version
        # moved on twice is still moved on). The first failure ends it (a hung node would cost every
        # later key a timeout), but the keys already cleared are still announced, through a node that
        # has just answered (PUBLISH reaches every node of the cluster).
        calls: list[tuple[Any, list[str], list[Any]]] = [(self._invalidate, [k, v], []) for k, v in pairs]
        calls += [(self._bump, [counter], [start]) for counter, start in bumps]
        answered: dict[str, Any] = {}
        try:
            for script, keys, args in calls:
                await script(keys=keys, args=args, client=c)
                answered = answered or {"target_nodes": c.get_node_from_key(keys[0])}  # type: ignore[no-untyped-call,unused-ignore]
        except REDIS_ERRORS:
            if answered:
                with contextlib.suppress(*REDIS_ERRORS):
                    await c.publish(self.channel, orjson.dumps(message), **answered)
            raise
        await c.publish(self.channel, orjson.dumps(message), **answered)
        return True

    async def publish(self, message: dict[str, Any], near: str) -> Any:
        """Send ``message`` to every process; on a cluster through the node of ``near`` (a key just
        written, so its node answers; PUBLISH reaches every node), not the client's default node."""

        async def run(c: AClient) -> Any:
            if isinstance(c, ARedisCluster):
                node = c.get_node_from_key(near)  # type: ignore[no-untyped-call,unused-ignore]
                return await c.publish(self.channel, orjson.dumps(message), target_nodes=node)
            return await c.publish(self.channel, orjson.dumps(message))

        return await self.call(run)

    async def bump(self, counter: str, start: int) -> Any:
        """Move a generation counter on (a missing one starts from ``start``); its new value, or SKIPPED."""
        return await self.call(lambda c: self._bump(keys=[counter], args=[start], client=c))

    async def generation(self, key: str, start: int) -> Any:
        """The global generation (a missing or unusable one becomes ``start``), or SKIPPED."""
        return await self.call(lambda c: self._generation(keys=[key], args=[start], client=c))

    async def lock(self, lock_key: str, token: str, ttl_ms: int) -> Any:
        return await self.call(lambda c: c.set(lock_key, token, nx=True, px=ttl_ms))

    async def unlock(self, lock_key: str, token: str) -> Any:
        """Release a loader's lock, even with the breaker open: the lock was taken moments ago, and one
        left behind makes other processes wait for a value that will not come."""
        client = self.client
        try:
            return await self._release(keys=[lock_key], args=[token], client=client)
        except REDIS_ERRORS as e:
            return await self._failed(e)

    # ------------------------------------------------------------------------------- subscriber

    def start_subscriber(self) -> None:
        """Start listening for invalidation messages (the async cache: once an event loop runs)."""
        if self._subscriber_started or self._stop.is_set():
            return
        try:
            aspawn(self._listen, name="datalayer-cache-invalidation")
        except RuntimeError:  # no running event loop yet: the first call made in one starts it
            return
        self._subscriber_started = True

    async def _listen(self) -> None:
        try:
            await self._listen_until_stopped()
        finally:
            self._subscriber_done.set()

    async def _listen_until_stopped(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            sub_client = self._subscriber_client()
            pubsub = sub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
            try:
                await pubsub.subscribe(self.channel)
                # Messages may have been missed while we were not subscribed: forget what we hold.
                self.on_message({"resubscribed": True})
                self.subscribed.set()
                delay = 0.1
                while not self._stop.is_set():
                    msg = await pubsub.get_message(timeout=0.25)
                    if msg and msg.get("type") == "message":
                        try:
                            self.on_message(orjson.loads(msg["data"]))
                        except (orjson.JSONDecodeError, TypeError):
                            log.warning("datalayer cache: ignored a malformed invalidation message")
            except Exception as e:  # (redis.RedisError, OSError and anything else): the listener must live on
                self.subscribed.clear()
                if self._stop.is_set():
                    return
                log.debug("datalayer cache: subscriber lost Redis (%s); reconnecting", e)
                self._sub_turn += 1
                self.on_message({"resubscribed": False})
                await self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await aclose_redis(pubsub)
                if sub_client is not self._sub_client:
                    with contextlib.suppress(redis.RedisError, OSError):
                        await aclose_redis(sub_client)

    def _subscriber_client(self) -> ARedis:
        """The client to listen with: on a cluster, a plain client of one node, the next one after a failure."""
        if not self.target.cluster:
            return self._sub_client
        urls = node_urls(self.target.url, self._client)
        return aredis_client(urls[self._sub_turn % len(urls)], socket_timeout=5.0, **self._common)

    async def close(self) -> None:
        self._stop.set()
        if self._subscriber_started:
            await self._subscriber_done.wait(2.0)
        for client in (self._client, self._sub_client):
            if client is not None:
                with contextlib.suppress(*REDIS_ERRORS):
                    await aclose_redis(client)
        with contextlib.suppress(*REDIS_ERRORS):
            await aclose_seeds(self._seeds)
