"""cache_entry_repo: get ignores expired rows, versioned upsert, delete, purge."""

from __future__ import annotations

import time
from typing import Any

import pytest

from datalayer import ValidationError
from datalayer import cache_entry_repo as repo


def test_set_get_delete(db: Any) -> None:
    e = repo.set(db, "user:{1}", {"name": "Ann", "tags": ["a"]}, ttl=60, version=3)
    assert e is not None and e.value == {"name": "Ann", "tags": ["a"]} and e.version == 3 and e.expires_at
    assert repo.get(db, "user:{1}") == e
    for value in ([1, 2], "text", 42, 1.5, True, None):
        stored = repo.set(db, "k", value, version=10)
        assert stored is not None and stored.value == value
    assert repo.delete(db, "user:{1}") and not repo.delete(db, "user:{1}")
    assert repo.get(db, "user:{1}") is None
    assert repo.set(db, "forever", 1) is not None and repo.get(db, "forever").expires_at is None  # type: ignore[union-attr]


def test_older_version_never_overwrites_newer(db: Any) -> None:
    assert repo.set(db, "k", "new", version=5) is not None
    assert repo.set(db, "k", "stale", version=4) is None
    assert repo.get(db, "k").value == "new"  # type: ignore[union-attr]
    assert repo.set(db, "k", "same version wins", version=5) is not None
    assert repo.set(db, "k", "newer", version=6).value == "newer"  # type: ignore[union-attr]


def test_expiry_and_purge(db: Any) -> None:
    repo.set(db, "short", 1, ttl=0.05)
    repo.set(db, "long", 2, ttl=60)
    time.sleep(0.1)
    assert repo.get(db, "short") is None and repo.get(db, "long") is not None
    assert repo.count(db) == 1
    assert repo.purge_expired(db) == 1 and repo.purge_expired(db) == 0


def test_delete_prefix_is_literal(db: Any) -> None:
    for k in ("dl:user:{1}", "dl:user:{2}", "dl:api:x", "dl_user:z", "dl%:user"):
        repo.set(db, k, 1)
    assert repo.delete_prefix(db, "dl:user:") == 2
    assert repo.delete_prefix(db, "dl%") == 1
    assert repo.count(db) == 2


@pytest.mark.parametrize(("args", "kwargs", "field"), [
    (("", 1), {}, "key"),
    (("x" * 513, 1), {}, "key"),
    (("k\x00", 1), {}, "key"),
    (("k", object()), {}, "value"),
    (("k", 1), {"ttl": 0}, "ttl"),
    (("k", 1), {"ttl": True}, "ttl"),
    (("k", 1), {"version": -1}, "version"),
    (("k", "\x00"), {}, "value"),
])
def test_bad_input(db: Any, args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        repo.set(db, *args, **kwargs)
    assert field in e.value.errors
    assert repo.count(db) == 0
