"""Hostile input against cache keys and the backup reader (hypothesis)."""

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
from datalayer.cache import Keys
from datalayer.pool import DataLayerPool, connection

ids = st.one_of(st.integers(), st.text(max_size=250), st.sampled_from(["}{", "{x}", "a:b", "%7B", "\n", "*", ""]),
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
