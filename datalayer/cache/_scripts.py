"""The Lua scripts of the Redis layer: each is one atomic step on a key and its version counter."""

from __future__ import annotations

__all__ = ["BUMP", "CAS_SET", "GENERATION", "INVALIDATE", "PUT", "RELEASE"]

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
CAS_SET = """
local current = redis.call('GET', KEYS[2]) or '0'
if current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""
# A write of the newest truth: move the version on (so in-flight loaders lose), then store.
PUT = (
    _MOVE_ON
    + """
move_on(KEYS[2], '1')
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)
# Invalidate: move the version on and delete.
INVALIDATE = (
    _MOVE_ON
    + """
move_on(KEYS[2], '1')
return redis.call('DEL', KEYS[1])
"""
)
# Move a generation counter on; a missing one starts from ARGV[1] (the clock, or the global generation).
BUMP = (
    _MOVE_ON
    + """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return move_on(KEYS[1], ARGV[1])
"""
)
# The global generation; a missing or unusable one (Redis lost its data, or it was overwritten) starts
# from the clock in ms, never from 0, so that no value written under an earlier life matches.
GENERATION = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^[1-9][0-9]*$') and string.len(current) <= 18 then
    return current
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
