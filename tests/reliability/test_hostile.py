"""Hostile input against repository writes, filters and cursors: only DataLayerError subclasses come
out, nothing is half-written, and whatever is stored comes back verbatim (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer import (
    DataLayerError,
    ValidationError,
    data_analysis_repo,
    system_log_repo,
    tool_generation_repo,
    transaction,
    user_repo,
)
from datalayer.pool import DataLayerPool, connection

INJECTIONS = [
    "'; DROP TABLE users; --", "\" OR \"1\"=\"1", "1; SELECT pg_sleep(5)", "$$ $x$ :user_id %(id)s %s %%",
    "\\.\n\\N\t\\x00", "' OR ''='", "admin'--", "${jndi:ldap://x}", "<script>alert(1)</script>", "ünï 🚀 \u202e",
]
hostile_text = st.one_of(st.text(max_size=300), st.sampled_from(INJECTIONS), st.text(min_size=190, max_size=400))
anything = st.one_of(hostile_text, st.integers(), st.floats(), st.none(), st.booleans(), st.binary(max_size=20),
                     st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
json_like = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**60), max_value=2**60)
                         | st.floats(allow_nan=False, allow_infinity=False) | hostile_text,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
                         max_leaves=8)
SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])


def _counts(db: Any) -> tuple[int, ...]:
    row = db.execute("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM data_analyses), "
                     "(SELECT count(*) FROM tool_generations), (SELECT count(*) FROM system_log)").fetchone()
    return tuple(row)


@SETTINGS
@given(username=anything, email=anything, hashed=anything)
def test_user_create(dl_module_pool: DataLayerPool, username: Any, email: Any, hashed: Any) -> None:
    with connection(dl_module_pool) as db:
        before = _counts(db)
        try:
            u = user_repo.create(db, username=username, email=email, hashed_password=hashed)
        except DataLayerError:
            assert _counts(db) == before
            return
        try:
            assert (u.username, u.hashed_password) == (username, hashed)
            assert u.email == email.strip()  # kept as typed; the identity is users.email_key
            assert user_repo.get_by_id(db, u.id) == u
            assert user_repo.get_by_email(db, email) == u
        finally:
            user_repo.delete(db, u.id)


@SETTINGS
@given(name=anything, analysis_type=anything, parameters=st.one_of(json_like, anything))
def test_analysis_create_round_trip(dl_module_pool: DataLayerPool, name: Any, analysis_type: Any,
                                    parameters: Any) -> None:
    with connection(dl_module_pool) as db:
        owner = user_repo.get_by_username(db, "hostile_owner") or user_repo.create(
            db, username="hostile_owner", email="owner@example.com", hashed_password="h")
        before = _counts(db)
        try:
            a = data_analysis_repo.create(db, user_id=owner.id, name=name, analysis_type=analysis_type,
                                          parameters=parameters)
        except DataLayerError:
            assert _counts(db) == before
            return
        try:
            assert (a.name, a.analysis_type) == (name.strip(), analysis_type)
            assert a.parameters == ({} if parameters is None else parameters)
            assert data_analysis_repo.get_by_id(db, a.id) == a
        finally:
            data_analysis_repo.delete(db, a.id)


@SETTINGS
@given(kw=st.fixed_dictionaries({}, optional={
    "user_id": anything, "status": st.one_of(anything, st.sampled_from(["pending", "running"])),
    "analysis_type": anything, "name_prefix": anything, "created_after": st.one_of(anything, st.datetimes()),
    "created_before": st.one_of(anything, st.datetimes(timezones=st.just(UTC))), "order": anything,
    "limit": st.one_of(anything, st.integers(min_value=-5, max_value=2000)), "after": anything}))
def test_analysis_filters(dl_module_pool: DataLayerPool, kw: dict[str, Any]) -> None:
    with connection(dl_module_pool) as db:
        try:
            page = data_analysis_repo.find(db, **kw)
        except DataLayerError:
            return
        assert len(page.items) <= kw.get("limit", 50)


@SETTINGS
@given(kw=st.fixed_dictionaries({}, optional={
    "user_id": anything, "status": anything, "tool_type": anything, "limit": anything, "after": anything}))
def test_generation_filters(dl_module_pool: DataLayerPool, kw: dict[str, Any]) -> None:
    with connection(dl_module_pool) as db:
        try:
            tool_generation_repo.find(db, **kw)
        except DataLayerError:
            pass


@SETTINGS
@given(cursor=st.one_of(st.text(max_size=600), st.binary(max_size=50).map(lambda b: b.hex()), anything))
def test_cursors(dl_module_pool: DataLayerPool, cursor: Any) -> None:
    with connection(dl_module_pool) as db:
        for call in (lambda: user_repo.find(db, after=cursor), lambda: data_analysis_repo.find(db, after=cursor),
                     lambda: system_log_repo.find(db, since=datetime.now(UTC) - timedelta(hours=1),
                                                  until=datetime.now(UTC), after=cursor)):
            try:
                call()
            except ValidationError:
                pass


@SETTINGS
@given(events=st.lists(st.fixed_dictionaries({"service": anything, "level": st.one_of(anything, st.just("INFO")),
                                              "message": hostile_text}, optional={"details": json_like}),
                       max_size=5))
def test_log_bulk_insert(dl_module_pool: DataLayerPool, events: list[dict[str, Any]]) -> None:
    with connection(dl_module_pool) as db:
        before = _counts(db)
        try:
            with transaction(db):
                n = system_log_repo.bulk_insert(db, events)
                assert _counts(db)[3] == before[3] + n == before[3] + len(events)
                raise _Undo
        except _Undo:
            pass
        except DataLayerError:
            pass
        assert _counts(db) == before


class _Undo(Exception):
    pass


@SETTINGS
@given(kw=st.fixed_dictionaries({"filename": anything, "file_type": anything, "size_bytes": anything,
                                 "storage_uri": anything}, optional={"checksum": anything}))
def test_file_create(dl_module_pool: DataLayerPool, kw: dict[str, Any]) -> None:
    from datalayer import analysis_file_repo

    with connection(dl_module_pool) as db:
        owner = user_repo.get_by_username(db, "hostile_owner") or user_repo.create(
            db, username="hostile_owner", email="owner@example.com", hashed_password="h")
        a = data_analysis_repo.create(db, user_id=owner.id, name="host", analysis_type="t")
        try:
            try:
                f = analysis_file_repo.create(db, analysis_id=a.id, **kw)
            except DataLayerError:
                assert analysis_file_repo.list_for_analysis(db, a.id) == []
                return
            assert (f.filename, f.file_type, f.size_bytes, f.storage_uri) == (
                kw["filename"], kw["file_type"], kw["size_bytes"], kw["storage_uri"])
            assert analysis_file_repo.get_by_id(db, f.id) == f
        finally:
            data_analysis_repo.delete(db, a.id)


@SETTINGS
@given(tool_type=anything, spec=st.one_of(json_like, anything), status=anything)
def test_generation_create_and_move(dl_module_pool: DataLayerPool, tool_type: Any, spec: Any, status: Any) -> None:
    with connection(dl_module_pool) as db:
        owner = user_repo.get_by_username(db, "hostile_owner") or user_repo.create(
            db, username="hostile_owner", email="owner@example.com", hashed_password="h")
        before = _counts(db)
        try:
            g = tool_generation_repo.create(db, user_id=owner.id, tool_type=tool_type, spec=spec)
        except DataLayerError:
            assert _counts(db) == before
            return
        try:
            assert g.tool_type == tool_type and g.spec == ({} if spec is None else spec)
            try:
                tool_generation_repo.find(db, user_id=owner.id, status=status)
            except DataLayerError:
                pass
        finally:
            tool_generation_repo.delete(db, g.id)
