"""The password policy and the argon2/bcrypt work itself, shared by ``passwords`` and its async source.

No I/O and no event loop here: ``passwords_async`` (the source of ``passwords``) checks the policy in
the caller and runs ``make_hash`` / ``matches`` through ``ablocking``, so argon2's tens of
milliseconds of CPU never stall an event loop, and the sync API calls them directly.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

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
    "make_hash",
    "matches",
    "may_match",
    "needs_rehash",
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


def make_hash(password: str) -> str:
    """The argon2id hash of an already checked ``password`` (CPU-bound: tens of milliseconds)."""
    return str(_context.hash(password))


# A stored hash names its own cost: one planted in the table (or in a restored backup) with
# m=4000000 or t=1000000 would take gigabytes or hours to verify. Anything costlier than this many
# times the parameters datalayer hashes with is refused without being computed.
_MAX_COST_FACTOR = 4
_ARGON2_COST = re.compile(r"^\$argon2(?:id|i|d)\$v=\d+\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,10})\$")
_BCRYPT_COST = re.compile(r"^\$2[abxy]?\$(\d{1,2})\$")


def _affordable(hashed: str) -> bool:
    argon2: Any = _context.handler("argon2")
    if (m := _ARGON2_COST.match(hashed)) is not None:
        memory, rounds, lanes = (int(g) for g in m.groups())
        limits = (argon2.memory_cost, argon2.default_rounds, argon2.parallelism)
        return all(v <= int(limit) * _MAX_COST_FACTOR for v, limit in zip((memory, rounds, lanes), limits, strict=True))
    if (b := _BCRYPT_COST.match(hashed)) is not None:
        return int(b.group(1)) <= 14
    return not hashed.startswith("$argon2")  # an argon2 hash whose cost cannot be read is not computed


def may_match(password: object, hashed: object) -> bool:
    """False when ``password``/``hashed`` cannot match whatever the hash says (cheap: no hashing), or
    when the hash asks for far more work than datalayer's own parameters (a planted hash)."""
    if not isinstance(password, str) or not isinstance(hashed, str) or not password or not hashed:
        return False
    return len(password) <= MAX_PASSWORD_CHARS and text_problem(password) is None and _affordable(hashed)


def matches(password: str, hashed: str) -> bool:
    """Whether ``password`` matches ``hashed`` (argon2 or bcrypt; CPU-bound); False for a malformed hash."""
    if not _affordable(hashed):
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
