"""Hostile input against cache keys, cache values and the backup reader (hypothesis)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer import (
    BackupError,
    DataLayerError,
    ValidationError,
    backup_database_data,
    restore_database_data,
    transaction,
    user_repo,
)
from datalayer.cache import CacheManager, Keys
from datalayer.config import RedisTarget, Settings
from datalayer.pool import DataLayerPool, connection

any_text = st.one_of(  # lone surrogates and NUL included, and often
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30),
    st.text(st.sampled_from("a\udcff\ud800\x00é"), max_size=5),
)
ids = st.one_of(st.integers(), st.text(max_size=250), any_text, st.sampled_from(["}{", "{x}", "a:b", "%7B", "\n", "*", ""]),
                st.none(), st.floats(), st.booleans(), st.binary(max_size=10))


@settings(max_examples=1000, deadline=None)
@given(a=ids, b=ids)
def test_cache_keys_are_escaped_and_injective(a: Any, b: Any) -> None:
    keys = Keys("dl")
    try:
        ka = keys.user(a)
    except ValidationError:
        return
    body = ka[len("dl:user:{"):-1]
    assert "{" not in body and "}" not in body and all(c.isprintable() and not c.isspace() for c in body)
    try:
        kb = keys.user(b)
    except ValidationError:
        return
    assert (ka == kb) == (str(a) == str(b))  # an int id and its string are one user
    for build in (keys.user_analyses, keys.analysis_result, keys.tool_generation):
        assert build(a).endswith("{" + body + "}")


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=True, allow_infinity=True), any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def value_cache(dl_module_pool: DataLayerPool, redis_target: RedisTarget) -> Any:
    cache = CacheManager(settings=Settings(cache_prefix=f"hv{os.getpid()}"), redis_target=redis_target,
                         pool=dl_module_pool, l1_size=0)
    yield cache
    cache.flush()
    cache.close()


@settings(max_examples=300, deadline=None)
@given(value=json_like)
def test_cache_values_come_back_as_written_from_every_layer_or_are_refused(value_cache: CacheManager,
                                                                           value: Any) -> None:
    key = value_cache.keys.analysis_result("v")
    value_cache.delete(key)
    try:
        value_cache.set(key, value)
    except ValidationError as e:
        assert set(e.errors) == {"value"}
        assert value_cache.redis.client.get(key) is None and value_cache.get(key) is None  # no layer holds it
        return
    if value is None:
        return
    assert value_cache.get(key) == value  # from Redis
    value_cache.redis.client.delete(key)
    assert value_cache.get(key) == value  # from the table


@pytest.fixture(scope="module")
def backup(dl_module_pool: DataLayerPool, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("backup") / "b.json"
    with connection(dl_module_pool) as db:
        for i in range(5):
            user_repo.create(db, username=f"bk{i}_{os.getpid()}", email=f"bk{i}@example.com", hashed_password="h")
        backup_database_data(db, path)
        with transaction(db):
            db.execute("DELETE FROM users")
    return path.read_bytes()


class _Undo(Exception):
    pass


mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(min_value=0, max_value=10**6)),
    st.tuples(st.just("flip"), st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("insert"), st.integers(min_value=0, max_value=10**6), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("delete_line"), st.integers(min_value=0, max_value=100)),
)


def _mutate(data: bytes, m: tuple[Any, ...]) -> bytes:
    kind = m[0]
    if kind == "truncate":
        return data[: m[1] % (len(data) + 1)]
    if kind == "flip":
        i = m[1] % len(data)
        return data[:i] + bytes([data[i] ^ m[2]]) + data[i + 1:]
    if kind == "insert":
        i = m[1] % (len(data) + 1)
        return data[:i] + m[2] + data[i:]
    lines = data.splitlines(keepends=True)
    del lines[m[1] % len(lines)]
    return b"".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(m=mutations)
def test_backup_reader_refuses_damage_and_writes_nothing(dl_module_pool: DataLayerPool, backup: bytes,
                                                         tmp_path_factory: pytest.TempPathFactory,
                                                         m: tuple[Any, ...]) -> None:
    damaged = _mutate(backup, m)
    path = tmp_path_factory.getbasetemp() / f"damaged-{os.getpid()}.json"
    path.write_bytes(damaged)
    with connection(dl_module_pool) as db:
        try:
            with transaction(db):  # the restore's own transaction becomes a savepoint we always undo
                try:
                    counts = restore_database_data(db, path)
                except BackupError:
                    assert user_repo.count(db) == 0  # nothing half-written
                    raise _Undo from None
                assert damaged == backup or counts["users"] == 5  # only harmless damage restores
                raise _Undo
        except _Undo:
            pass
        except DataLayerError as e:  # anything else must still be one of ours
            assert isinstance(e, DataLayerError)
        assert user_repo.count(db) == 0
