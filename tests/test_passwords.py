"""Passwords: argon2 by default, bcrypt verified and flagged for rehash, hostile input handled."""

from __future__ import annotations

import bcrypt
import pytest

from datalayer import ValidationError, hash_password, needs_rehash, verify_password


def test_argon2_default() -> None:
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert verify_password("correct horse battery staple", h)
    assert not verify_password("wrong", h)
    assert not needs_rehash(h)
    assert hash_password("same-pw1") != hash_password("same-pw1")  # salted


def test_bcrypt_verified_and_flagged() -> None:
    legacy = bcrypt.hashpw(b"old password", bcrypt.gensalt(rounds=4)).decode()
    assert verify_password("old password", legacy)
    assert not verify_password("other", legacy)
    assert needs_rehash(legacy)


@pytest.mark.parametrize("hashed", ["", "garbage", "$argon2id$broken", "$2b$04$short", None, 5])
def test_malformed_hashes_never_verify(hashed: object) -> None:
    assert verify_password("pw", hashed) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ["", "short", "a\x00bcdefghi", "x" * 1025, None, 123, "lone \udcff surrogate"])
def test_bad_passwords(password: object) -> None:
    with pytest.raises(ValidationError):
        hash_password(password)  # type: ignore[arg-type]
    assert verify_password(password, hash_password("fine pass")) is False  # type: ignore[arg-type]


def test_unicode_passwords() -> None:
    h = hash_password("pässwörd 🔐")
    assert verify_password("pässwörd 🔐", h) and not verify_password("passwords 🔐", h)


def test_a_planted_hash_that_asks_for_huge_work_is_refused_without_computing_it() -> None:
    """A stored hash names its own cost: m=4000000 would take gigabytes, t=1000000 hours."""
    import time

    from datalayer import verify_password

    for planted in ("$argon2id$v=19$m=4000000,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
                    "$argon2id$v=19$m=65536,t=1000000,p=4$c2FsdHNhbHQ$aGFzaGhhc2g",
                    "$argon2id$v=19$m=65536,t=3,p=255$c2FsdHNhbHQ$aGFzaGhhc2g",
                    "$argon2id$v=19$m=,t=3$c2FsdHNhbHQ$aGFzaGhhc2g",
                    "$2b$31$" + "a" * 53):
        started = time.monotonic()
        assert verify_password("correct horse", planted) is False
        assert time.monotonic() - started < 0.5
    assert verify_password("correct horse", hash_password("correct horse"))
