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
