"""The Redis layer: short timeouts, no retries, a circuit breaker, and pub/sub invalidation.

redis-py's defaults (socket timeouts of seconds, several retries) make one GET against a hung Redis
take about a minute. Here a call waits at most ``timeout`` seconds; the first failure opens the
breaker, so every later call skips Redis at once until ``cooldown`` has passed and one call probes it
again. A successful probe after an outage runs ``on_recover`` (the manager bumps the global generation
there: values written before the outage may have missed invalidations).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from datalayer.config import RedisTarget
from datalayer.errors import CacheUnavailable

__all__ = ["SKIPPED", "Breaker", "RedisLayer"]

log = logging.getLogger("datalayer.cache")
T = TypeVar("T")


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()

# Counters (versions, generations) move on with INCR. One that cannot move (not an integer, or at the
# top of Redis's 64-bit range: only a hand-edited or corrupted counter gets there) starts again at
# ARGV[1]: an error here would open the breaker and turn one bad key into an outage. A writer still
# holding the old value compares unequal to the new one, which is all a version is for.
_MOVE_ON = """
local function move_on(key, restart)
    local moved = redis.pcall('INCR', key)
    if type(moved) == 'table' and moved.err then
        redis.call('SET', key, restart)
        return tonumber(restart)
    end
    return moved
end
"""
# SET key value PX ttl, only if the key's version counter still holds the version the writer read
# before it loaded the value: a concurrent invalidation (INCR) makes the write lose.
_CAS_SET = """
local current = redis.call('GET', KEYS[2]) or '0'
if current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
# A write of the newest truth: move the version on (so in-flight loaders lose), then store.
_PUT = (
    _MOVE_ON
    + """
move_on(KEYS[2], '1')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)
# Invalidate: move the version on and delete.
_INVALIDATE = (
    _MOVE_ON
    + """
move_on(KEYS[2], '1')
return redis.call('DEL', KEYS[1])
"""
)
# Move a generation counter on; a missing one starts from ARGV[1] (the clock, or the global generation).
_BUMP = (
    _MOVE_ON
    + """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return move_on(KEYS[1], ARGV[1])
"""
)
# The global generation; a missing or unusable one (Redis lost its data, or it was overwritten) starts
# from the clock in ms, never from 0, so that no value written under an earlier life matches.
_GENERATION = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^[1-9][0-9]*$') and string.len(current) <= 18 then
    return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Breaker:
    """closed → (a failure) → open for ``cooldown`` s → half-open (one probe) → closed or open again."""

    def __init__(self, cooldown: float) -> None:
        self.cooldown = cooldown
        self.state = "closed"
        self.opened_at = 0.0
        self.failures = 0
        self.opened = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        with self._lock:
            if self.state == "open" and time.monotonic() - self.opened_at >= self.cooldown:
                self.state = "half-open"
                return True  # this caller probes
            return False

    def success(self) -> bool:
        """Record a success; True when it ends an outage."""
        if self.state == "closed":
            self.failures = 0
            return False
        with self._lock:
            recovered = self.state != "closed"
            self.state = "closed"
            self.failures = 0
            return recovered

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.state != "open":
                self.opened += 1
            self.state = "open"
            self.opened_at = time.monotonic()


class RedisLayer:
    """One Redis client with bounded calls, plus a subscriber thread for invalidation messages."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        timeout: float,
        cooldown: float,
        strict: bool,
        on_recover: Callable[[], None],
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
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
            "client_name": "datalayer",
        }
        self.client = redis.Redis.from_url(target.url, socket_timeout=timeout, **common)
        # The subscriber waits for messages: its reads may block, its connects may not.
        self._sub_client = redis.Redis.from_url(target.url, socket_timeout=5.0, **common)
        self._cas = self.client.register_script(_CAS_SET)
        self._put = self.client.register_script(_PUT)
        self._invalidate = self.client.register_script(_INVALIDATE)
        self._bump = self.client.register_script(_BUMP)
        self._generation = self.client.register_script(_GENERATION)
        self._release = self.client.register_script(_RELEASE)
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None
        self._prober_lock = threading.Lock()
        self._subscriber: threading.Thread | None = None
        self.subscribed = threading.Event()

    # ------------------------------------------------------------------------------------- calls

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """``fn(client)``, or SKIPPED when the breaker is open or the call fails (strict: CacheUnavailable)."""
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
            if self._prober is not None and self._prober.is_alive():
                return
            self._prober = threading.Thread(target=self._probe, name="datalayer-cache-probe", daemon=True)
            self._prober.start()

    def _probe(self) -> None:
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

    def get(self, key: str) -> Any:
        # The hot path of every cache hit: the same as call(), without the closure.
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

        def run(c: redis.Redis) -> bool:
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
        if self._subscriber is None:
            self._subscriber = threading.Thread(target=self._listen, name="datalayer-cache-invalidation", daemon=True)
            self._subscriber.start()

    def _listen(self) -> None:
        delay = 0.1
        while not self._stop.is_set():
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
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
            except Exception as e:  # (redis.RedisError, OSError and anything else): this thread must live on
                self.subscribed.clear()
                if self._stop.is_set():
                    return
                log.debug("datalayer cache: subscriber lost Redis (%s); reconnecting", e)
                self.on_message({"resubscribed": False})
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def close(self) -> None:
        self._stop.set()
        if self._subscriber is not None:
            self._subscriber.join(2.0)
        for client in (self.client, self._sub_client):
            with contextlib.suppress(redis.RedisError, OSError):
                client.close()
