"""Password hashing with passlib (the maintained fork, libpass): argon2 by default, bcrypt verified.

    h = hash_password("correct horse battery staple")                 # datalayer
    verify_password("correct horse battery staple", h)                # True
    h = await hash_password("correct horse battery staple")           # datalayer.aio
    await verify_password("correct horse battery staple", h)          # True

bcrypt hashes (from an older system) still verify, and ``needs_rehash`` flags them so that the next
successful login can store an argon2 hash instead. The policy is checked in the caller; the hashing
itself (CPU-bound, tens of milliseconds) runs in a worker thread in the async API, so an event loop
keeps serving meanwhile.

Written once, in ``passwords_async.py``; ``passwords.py`` is generated from it by
tools/async_to_sync.py. The policy and the hashing live once, in ``datalayer._passwords``.
"""

from __future__ import annotations

from datalayer._acompat import ablocking
from datalayer._passwords import (
    MAX_PASSWORD_CHARS,
    MIN_PASSWORD_CHARS,
    check_password,
    make_hash,
    matches,
    may_match,
    needs_rehash,
)

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "check_password",
    "hash_password",
    "needs_rehash",
    "verify_password",
]


async def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; a new hash each call); ValidationError unless it meets the policy."""
    return await ablocking(make_hash, check_password(password))


async def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches ``hashed`` (argon2 or bcrypt); False for any malformed input."""
    if not may_match(password, hashed):
        return False
    return await ablocking(matches, password, hashed)
