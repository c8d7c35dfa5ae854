"""Password hashing with passlib (the maintained fork, libpass): argon2 by default, bcrypt verified.

>>> h = hash_password("correct horse battery staple")
>>> h.startswith("$argon2id$"), verify_password("correct horse battery staple", h)
(True, True)

bcrypt hashes (from an older system) still verify, and ``needs_rehash`` flags them so that the next
successful login can store an argon2 hash instead.
"""

from __future__ import annotations

import warnings

from datalayer.errors import ValidationError

with warnings.catch_warnings():
    # Some passlib releases warn at import about the removed `crypt` module; harmless, and we never use it.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.context import CryptContext

__all__ = ["hash_password", "needs_rehash", "verify_password"]

MAX_PASSWORD_CHARS = 1024

_context = CryptContext(schemes=["argon2", "bcrypt"], default="argon2", deprecated=["bcrypt"])


def _check(password: object) -> str:
    if not isinstance(password, str) or not password:
        raise ValidationError({"password": "must be a non-empty string"})
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationError({"password": f"must be at most {MAX_PASSWORD_CHARS} characters long"})
    if "\x00" in password:
        raise ValidationError({"password": "must not contain NUL characters"})
    return password


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; a new hash each call)."""
    return str(_context.hash(_check(password)))


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches ``hashed`` (argon2 or bcrypt); False for any malformed input."""
    if not isinstance(password, str) or not isinstance(hashed, str) or not password or not hashed:
        return False
    if len(password) > MAX_PASSWORD_CHARS or "\x00" in password:
        return False
    try:
        return bool(_context.verify(password, hashed))
    except (ValueError, TypeError):
        return False


def needs_rehash(hashed: str) -> bool:
    """True when ``hashed`` uses a deprecated scheme (bcrypt) or weaker argon2 parameters."""
    try:
        return bool(_context.needs_update(hashed))
    except (ValueError, TypeError):
        return True
