# Generated from datalayer/cache/_redis_async.py by tools/async_to_sync.py: edit that file, then run the tool.
"""The Redis layer: short timeouts, no retries, a circuit breaker, and pub/sub invalidation.

redis-py's defaults (socket timeouts of seconds, several retries) make one GET against a hung Redis
take about a minute. Here a call waits at most ``timeout`` seconds; the first failure opens the
breaker, so every later call skips Redis at once until ``cooldown`` has passed and one call probes it
again. A successful probe after an outage runs ``on_recover`` (the manager bumps the global generation
there: values written before the outage may have missed invalidations).

The prober and the subscriber run in the background: daemon threads for the sync cache, tasks of the
event loop for the async one (started by the first call made in a running loop).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis

from datalayer._acompat import Job, Lock, Signal, Thunk, spawn
from datalayer.cache._acompat import Redis, close_redis, redis_client
from datalayer.cache._breaker import Breaker
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
        on_recover: Thunk[None],
        on_message: Callable[[dict[str, Any]], None],
        channel: str,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.strict = strict
        self.breaker = Breaker(cooldown)
        self.on_recover = on_recover
        self.on_message = on_message
        self.channel = channel
        self.stats = {"hits": 0, "misses": 0, "errors": 0, "skipped": 0, "writes": 0}
        password = target.password.value if target.password else None
        common: dict[str, Any] = {
            "password": password,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
            "client_name": "datalayer",
        }
        self.client: Redis = redis_client(target.url, socket_timeout=timeout, **common)
        # The subscriber waits for messages: its reads may block, its connects may not.
        self._sub_client: Redis = redis_client(target.url, socket_timeout=5.0, **common)
        self._cas = self.client.register_script(CAS_SET)
        self._put = self.client.register_script(PUT)
        self._invalidate = self.client.register_script(INVALIDATE)
        self._bump = self.client.register_script(BUMP)
        self._generation = self.client.register_script(GENERATION)
        self._release = self.client.register_script(RELEASE)
        self._stop = Signal()
        self._probing = False
        self._prober_lock = Lock()
        self._subscriber_started = False
        self._subscriber_done = Signal()
        self.subscribed = Signal()

    # ------------------------------------------------------------------------------------- calls

    def call(self, fn: Job[Redis, T]) -> T:
        """``fn(client)``, or SKIPPED when the breaker is open or the call fails (strict: CacheUnavailable)."""
        if not self._subscriber_started:
            self.start_subscriber()
        if not self.breaker.allow():
            return self._skipped()  # type: ignore[no-any-return]
        try:
            result = fn(self.client)
        except (redis.RedisError, OSError) as e:
            return self._failed(e)  # type: ignore[no-any-return]
        self._succeeded()
        return result

    def _skipped(self) -> Any:
        self.stats["skipped"] += 1
        if self.strict:
            raise CacheUnavailable(f"Redis at {self.target.display} is unavailable (circuit open)")
        return SKIPPED

    def _succeeded(self) -> None:
        if self.breaker.state != "closed" and self.breaker.success():
            log.warning("datalayer cache: Redis is back")
            self.on_recover()

    def _failed(self, e: BaseException) -> Any:
        """Record a failed call (the breaker opens) and return SKIPPED, or raise in strict mode."""
        self.stats["errors"] += 1
        self.breaker.failure()
        self._start_prober()
        log.warning(
            "datalayer cache: Redis call failed (%s: %s); skipping Redis for %.1f s",
            type(e).__name__,
            e,
            self.breaker.cooldown,
        )
        if self.strict:
            raise CacheUnavailable(f"Redis at {self.target.display} failed: {type(e).__name__}") from e
        return SKIPPED

    def _start_prober(self) -> None:
        # Probe in the background too: recovery (the generation bump that retires values which may have
        # missed invalidations) must not wait for the next cache call of this process.
        with self._prober_lock:
            if self._probing:
                return
            self._probing = True
            try:
                spawn(self._probe, name="datalayer-cache-probe")
            except RuntimeError:  # no thread (or no running event loop) to probe in: calls probe instead
                self._probing = False

    def _probe(self) -> None:
        try:
            while not self._stop.wait(self.breaker.cooldown):
                if self.breaker.state == "closed":
                    return
                try:
                    self.client.ping()
                except (redis.RedisError, OSError):
                    self.breaker.failure()
                    continue
                if self.breaker.success():
                    log.warning("datalayer cache: Redis is back")
                    self.on_recover()
                return
        finally:
            self._probing = False

    def get(self, key: str) -> Any:
        # The hot path of every cache hit: the same as call(), without the closure.
        if not self._subscriber_started:
            self.start_subscriber()
        breaker = self.breaker
        if breaker.state != "closed" and not breaker.allow():
            return self._skipped()
        try:
            value = self.client.get(key)
        except (redis.RedisError, OSError) as e:
            return self._failed(e)
        if breaker.state != "closed":
            self._succeeded()
        return value

    def cas_set(self, key: str, version_key: str, expected: bytes | str | None, value: bytes, ttl_ms: int) -> Any:
        exp = expected.decode() if isinstance(expected, bytes) else (expected or "0")
        return self.call(lambda c: self._cas(keys=[key, version_key], args=[exp, value, ttl_ms], client=c))

    def put(self, key: str, version_key: str, value: bytes, ttl_ms: int) -> Any:
        return self.call(lambda c: self._put(keys=[key, version_key], args=[value, ttl_ms], client=c))

    def invalidate(
        self, pairs: list[tuple[str, str]], message: dict[str, Any], bumps: tuple[tuple[str, int], ...] = ()
    ) -> bool:
        """Invalidate (key, version key) pairs, move (counter, start) generations on, and tell the other
        processes; False if Redis was skipped or failed."""

        def run(c: Redis) -> bool:
            pipe = c.pipeline(transaction=False)
            for key, version_key in pairs:
                self._invalidate(keys=[key, version_key], client=pipe)
            for counter, start in bumps:
                self._bump(keys=[counter], args=[start], client=pipe)
            pipe.publish(self.channel, orjson.dumps(message))
            pipe.execute()
            return True

        return self.call(run) is True

    def bump(self, counter: str, start: int) -> Any:
        """Move a generation counter on (a missing one starts from ``start``); its new value, or SKIPPED."""
        return self.call(lambda c: self._bump(keys=[counter], args=[start], client=c))

    def generation(self, key: str, start: int) -> Any:
        """The global generation (a missing or unusable one becomes ``start``), or SKIPPED."""
        return self.call(lambda c: self._generation(keys=[key], args=[start], client=c))

    def lock(self, lock_key: str, token: str, ttl_ms: int) -> Any:
        return self.call(lambda c: c.set(lock_key, token, nx=True, px=ttl_ms))

    def unlock(self, lock_key: str, token: str) -> Any:
        return self.call(lambda c: self._release(keys=[lock_key], args=[token], client=c))

    # ------------------------------------------------------------------------------- subscriber

    def start_subscriber(self) -> None:
        """Start listening for invalidation messages (the async cache: once an event loop runs)."""
        if self._subscriber_started or self._stop.is_set():
            return
        try:
            spawn(self._listen, name="datalayer-cache-invalidation")
        except RuntimeError:  # no running event loop yet: the first call made in one starts it
            return
        self._subscriber_started = True

    def _listen(self) -> None:
        try:
            self._listen_until_stopped()
        finally:
            self._subscriber_done.set()

    def _listen_until_stopped(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call,unused-ignore]
            try:
                pubsub.subscribe(self.channel)
                # Messages may have been missed while we were not subscribed: forget what we hold.
                self.on_message({"resubscribed": True})
                self.subscribed.set()
                delay = 0.1
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.25)
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
                self.on_message({"resubscribed": False})
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    close_redis(pubsub)

    def close(self) -> None:
        self._stop.set()
        if self._subscriber_started:
            self._subscriber_done.wait(2.0)
        for client in (self.client, self._sub_client):
            with contextlib.suppress(redis.RedisError, OSError):
                close_redis(client)
