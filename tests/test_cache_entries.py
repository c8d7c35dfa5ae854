"""cache_entry_repo: get ignores expired rows, versioned upsert, delete, purge."""

from __future__ import annotations

import time
from typing import Any

import pytest

from datalayer import ValidationError
from datalayer import cache_entry_repo as repo


def test_set_get_delete(db: Any) -> None:
    e = repo.set(db, "user:{1}", {"name": "Ann", "tags": ["a"]}, ttl=60, version=3)
    assert repo.set(db, "user:{1}", "older", version=3) is None
    assert e is not None and e.value == {"name": "Ann", "tags": ["a"]} and e.version == 3 and e.expires_at
    assert repo.get(db, "user:{1}") == e
    for version, value in enumerate(([1, 2], "text", 42, 1.5, True), start=10):
        stored = repo.set(db, "k", value, version=version)
        assert stored is not None and stored.value == value
    assert repo.delete(db, "user:{1}") and not repo.delete(db, "user:{1}")
    assert repo.get(db, "user:{1}") is None
    assert repo.set(db, "forever", 1) is not None and repo.get(db, "forever").expires_at is None  # type: ignore[union-attr]


def test_older_version_never_overwrites_newer(db: Any) -> None:
    assert repo.set(db, "k", "new", version=5) is not None
    assert repo.set(db, "k", "stale", version=4) is None
    assert repo.set(db, "k", "same version loses", version=5) is None
    assert repo.get(db, "k").value == "new"  # type: ignore[union-attr]
    assert repo.set(db, "k", "newer", version=6).value == "newer"  # type: ignore[union-attr]


def test_put_and_invalidate_move_the_version(db: Any) -> None:
    first = repo.put(db, "k", 1)
    second = repo.put(db, "k", 2)
    assert (first.version, second.version) == (1, 2)
    observed = repo.peek(db, "k")
    assert observed is not None and observed.version == 2
    assert repo.invalidate(db, ["k", "never-cached"]) == 2
    assert repo.get(db, "k") is None and repo.count(db) == 0
    tomb = repo.peek(db, "k")
    assert tomb is not None and tomb.value is None and tomb.version == 3
    # a writer that read version 2 before the invalidation loses; one that read the tombstone wins
    assert repo.set(db, "k", "stale", version=observed.version + 1) is None
    assert repo.set(db, "k", "fresh", version=tomb.version + 1) is not None
    never = repo.peek(db, "never-cached")
    assert never is not None and never.version == 1 and repo.set(db, "never-cached", "stale", version=1) is None


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
    (("k", None), {}, "value"),
])
def test_bad_input(db: Any, args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as e:
        repo.set(db, *args, **kwargs)
    assert field in e.value.errors
    assert repo.count(db) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")], 2**64, -(2**63) - 1, "\udcff",
                                   {"k": "\x00"}, {1: "int key"}, "x" * 1_000_001])
def test_values_follow_the_json_column_rules(db: Any, value: Any) -> None:
    with pytest.raises(ValidationError) as e:
        repo.set(db, "k", value)
    assert "value" in e.value.errors
    with pytest.raises(ValidationError):
        repo.put(db, "k", value)
    assert repo.peek(db, "k") is None


def test_versions_cannot_overflow(db: Any) -> None:
    assert repo.set(db, "k", 1, version=repo.MAX_VERSION) is not None
    with pytest.raises(ValidationError) as e:
        repo.set(db, "k", 1, version=repo.MAX_VERSION + 1)
    assert "version" in e.value.errors
    # a row already at bigint's top (written before the bound existed) can still be replaced and
    # invalidated; it stays at the top, where no stale writer can beat it
    top = 2**63 - 1
    db.execute("INSERT INTO cache_entries (key, value, version) VALUES ('top', '1', %s)", (top,))
    assert repo.invalidate(db, ["top"]) == 1
    tomb = repo.peek(db, "top")
    assert tomb is not None and tomb.value is None and tomb.version == top
    assert repo.put(db, "top", 2).version == top and repo.get(db, "top").value == 2  # type: ignore[union-attr]
    assert repo.set(db, "top", "stale", version=repo.MAX_VERSION) is None
    assert repo.invalidate(db, ["top"]) == 1 and repo.get(db, "top") is None


def test_invalidate_takes_repeated_keys(db: Any) -> None:
    repo.put(db, "a", 1)
    assert repo.invalidate(db, ["b", "a", "b", "a"]) == 2
    assert repo.peek(db, "a").version == 2 and repo.peek(db, "b").version == 1  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        repo.invalidate(db, ["ok", "\udcff"])
    with pytest.raises(ValidationError):
        repo.invalidate(db, "a")  # type: ignore[arg-type]


def test_pending_invalidations_round_trip(db: Any) -> None:
    assert repo.can_record_invalidations(db) is True
    repo.put(db, "p:x", 1)
    ids = repo.record_invalidations(db, ["p:x", "p:y"])
    other = repo.record_invalidations(db, ["q:x"], kind="api", table_done=True)
    pending = repo.pending_invalidations(db, "p:")
    assert [(p.id, p.kind, p.key, p.table_done) for p in pending] == [(ids[0], "key", "p:x", False),
                                                                       (ids[1], "key", "p:y", False)]
    repo.apply_invalidations_to_table(db, ids)
    assert repo.get(db, "p:x") is None and all(p.table_done for p in repo.pending_invalidations(db, "p:"))
    version = repo.peek(db, "p:x").version  # type: ignore[union-attr]
    repo.apply_invalidations_to_table(db, ids)  # once only: a second pass tombstones nothing
    assert repo.peek(db, "p:x").version == version  # type: ignore[union-attr]
    repo.forget_invalidations(db, ids)
    assert repo.pending_invalidations(db, "p:") == []
    assert [p.key for p in repo.pending_invalidations(db, "q:")] == ["q:x"] and other
    repo.settle_invalidations(db, other, [], redis_done=True)
    assert repo.pending_invalidations(db, "q:") == []
    with pytest.raises(ValidationError):
        repo.record_invalidations(db, ["k"], kind="other")
