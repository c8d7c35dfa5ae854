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
from datalayer.text import text_problem

with warnings.catch_warnings():
    # Some passlib releases warn at import about the removed `crypt` module; harmless, and we never use it.
    warnings.simplefilter("ignore", DeprecationWarning)
    from passlib.context import CryptContext

__all__ = [
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "check_password",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

# The password policy, in one place: validate_user_data, hash_password and create_with_password use it.
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024

_context = CryptContext(schemes=["argon2", "bcrypt"], default="argon2", deprecated=["bcrypt"])


def check_password(password: object) -> str:
    """``password`` if it meets the policy (8 to 1024 characters of storable text); else ValidationError."""
    if (problem := text_problem(password)) is not None:
        raise ValidationError({"password": problem})
    text = str(password)
    if not MIN_PASSWORD_CHARS <= len(text) <= MAX_PASSWORD_CHARS:
        raise ValidationError({"password": f"must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"})
    return text


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; a new hash each call); ValidationError unless it meets the policy."""
    return str(_context.hash(check_password(password)))


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches ``hashed`` (argon2 or bcrypt); False for any malformed input."""
    if not isinstance(password, str) or not isinstance(hashed, str) or not password or not hashed:
        return False
    if len(password) > MAX_PASSWORD_CHARS or text_problem(password) is not None:
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
