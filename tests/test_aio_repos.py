"""datalayer.aio's repositories: every function of the async sources, awaited on a real
psycopg.AsyncConnection to this test's database, with the same rules as the sync modules generated from
them (ownership, keyset pages, status moves, conflicts naming the field, input checks)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import threading
import types
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import url_of

import datalayer
from datalayer import IllegalTransition, IntegrityConflict, NotFound, ValidationError
from datalayer.aio import (
    analysis_file_repo,
    cache_entry_repo,
    data_analysis_repo,
    tool_generation_repo,
    user_repo,
)
from datalayer.pool import DataLayerPool
from datalayer.records import AnalysisFile, DataAnalysis, OffsetPage, Page, ToolGeneration, User
from datalayer.repos._cache_types import Checked

pytestmark = pytest.mark.anyio

# The async module of each public name and its sync twin (the module generated from it).
REPOS: dict[str, tuple[types.ModuleType, types.ModuleType]] = {
    "user_repo": (user_repo, datalayer.user_repo),
    "data_analysis_repo": (data_analysis_repo, datalayer.data_analysis_repo),
    "analysis_file_repo": (analysis_file_repo, datalayer.analysis_file_repo),
    "tool_generation_repo": (tool_generation_repo, datalayer.tool_generation_repo),
    "cache_entry_repo": (cache_entry_repo, datalayer.cache_entry_repo),
}
Conn = psycopg.AsyncConnection[Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def adb(dl_pool: DataLayerPool) -> AsyncIterator[Conn]:
    """An autocommit async connection to this test's fresh migrated database (the one ``db`` uses)."""
    conn = await psycopg.AsyncConnection.connect(url_of(dl_pool.target), autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


_n = 0


async def _user(adb: Conn, name: str | None = None) -> User:
    global _n
    _n += 1
    name = name or f"auser{_n}"
    return await user_repo.create(adb, username=name, email=f"{name}@example.com", hashed_password="h")


async def _analysis(adb: Conn, owner: User, name: str = "churn") -> DataAnalysis:
    return await data_analysis_repo.create(adb, user_id=owner.id, name=name, analysis_type="cohort")


async def _file(adb: Conn, a: DataAnalysis, file_type: str = "csv", size: int = 100) -> AnalysisFile:
    return await analysis_file_repo.create(
        adb, analysis_id=a.id, filename=f"f.{file_type}", file_type=file_type, size_bytes=size,
        storage_uri=f"s3://bucket/f.{file_type}",
    )


# ------------------------------------------------------------------------------- one source, two APIs


def test_every_public_function_is_awaitable_with_its_sync_twins_signature() -> None:
    for public, (amod, smod) in REPOS.items():
        assert amod.__name__ == smod.__name__ + "_async", public
        assert list(amod.__all__) == list(smod.__all__), public
        functions = [n for n in amod.__all__ if inspect.isfunction(getattr(amod, n))]
        assert len(functions) >= 9, public
        for name in functions:
            afn, sfn = getattr(amod, name), getattr(smod, name)
            assert inspect.iscoroutinefunction(afn) and not inspect.iscoroutinefunction(sfn), f"{public}.{name}"
            a_params = [(p.name, p.kind, p.default) for p in inspect.signature(afn).parameters.values()]
            s_params = [(p.name, p.kind, p.default) for p in inspect.signature(sfn).parameters.values()]
            assert a_params == s_params, f"{public}.{name}"
            assert afn.__doc__ == sfn.__doc__, f"{public}.{name}"


def test_every_async_repository_function_is_called_by_this_module() -> None:
    # The brief of this module: each function awaited at least once. Read from its own source, so a
    # function added to a repository without a test here fails.
    called: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(Path(__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Await) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in REPOS:
                called.add((f.value.id, f.attr))
    missing = [
        f"{public}.{name}"
        for public, (amod, _) in REPOS.items()
        for name in amod.__all__
        if inspect.iscoroutinefunction(getattr(amod, name)) and (public, name) not in called
    ]
    assert not missing, f"never awaited here: {missing}"


async def test_what_the_async_api_writes_the_sync_api_reads(adb: Conn, db: Any) -> None:
    u = await _user(adb, "both")
    assert datalayer.user_repo.get_by_id(db, u.id) == u
    a = datalayer.data_analysis_repo.create(db, user_id=u.id, name="from sync", analysis_type="t")
    assert await data_analysis_repo.get_by_id(adb, a.id) == a


async def test_a_sync_connection_is_refused_before_anything_runs(db: Any) -> None:
    with pytest.raises(ValidationError) as e:
        await user_repo.create(db, username="nope", email="nope@example.com", hashed_password="h")
    assert list(e.value.errors) == ["db"] and "AsyncConnection" in e.value.errors["db"]
    assert datalayer.user_repo.count(db) == 0


# ------------------------------------------------------------------------------------------- users


async def test_users_crud(adb: Conn) -> None:
    u = await user_repo.create(adb, username="ann", email="Ann@Example.com", hashed_password="h")
    assert (u.username, u.email, u.is_active) == ("ann", "Ann@Example.com", True)
    assert await user_repo.get_by_id(adb, u.id) == u
    assert await user_repo.get_by_id(adb, u.id + 1000) is None
    assert await user_repo.get_by_username(adb, "ann") == u
    assert await user_repo.get_by_username(adb, "bob") is None
    assert await user_repo.get_by_email(adb, "ANN@example.com") == u
    assert await user_repo.get_by_email(adb, "not an address") is None
    bob = await _user(adb, "bob")
    assert await user_repo.get_many(adb, [bob.id, u.id, 999_999]) == [u, bob]
    assert await user_repo.get_many(adb, []) == []
    changed = await user_repo.update(adb, u.id, is_active=False, username="ann2")
    assert changed is not None and (changed.username, changed.is_active) == ("ann2", False)
    assert await user_repo.update(adb, 999_999, is_active=False) is None
    assert await user_repo.count(adb) == 2 and await user_repo.count(adb, is_active=False) == 1
    assert await user_repo.delete(adb, u.id) is True
    assert await user_repo.delete(adb, u.id) is False
    assert await user_repo.get_by_id(adb, u.id) is None


async def test_create_with_password_hashes_off_the_event_loop(adb: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    import datalayer.passwords as passwords

    real, threads = passwords.hash_password, []

    def recording(password: str) -> str:
        threads.append(threading.get_ident())
        return real(password)

    monkeypatch.setattr(passwords, "hash_password", recording)
    u = await user_repo.create_with_password(
        adb, username="pwuser", email="pw@example.com", password="correct horse battery staple"
    )
    assert threads and threads[0] != threading.get_ident(), "argon2 ran on the event loop's thread"
    assert u.hashed_password.startswith("$argon2id$") and "correct horse" not in u.hashed_password
    assert passwords.verify_password("correct horse battery staple", u.hashed_password)
    with pytest.raises(ValidationError) as e:  # refused before hashing
        await user_repo.create_with_password(adb, username="pwuser2", email="pw2@example.com", password="short")
    assert list(e.value.errors) == ["password"] and len(threads) == 1


@pytest.mark.parametrize(
    ("field", "other"),
    [("username", {"username": "dup", "email": "other@example.com"}),
     ("email", {"username": "other", "email": "DUP@example.com"})],
)
async def test_user_conflicts_name_the_field(adb: Conn, field: str, other: dict[str, str]) -> None:
    await user_repo.create(adb, username="dup", email="dup@example.com", hashed_password="h")
    with pytest.raises(IntegrityConflict) as e:
        await user_repo.create(adb, hashed_password="h", **other)  # type: ignore[arg-type]
    assert e.value.field == field and "sql/users.sql:" in str(e.value)
    assert isinstance(e.value.__cause__, psycopg.errors.UniqueViolation)
    assert await user_repo.count(adb) == 1


async def test_user_input_is_checked(adb: Conn) -> None:
    with pytest.raises(ValidationError) as e:
        await user_repo.create(adb, username="okay", email="no-at-sign", hashed_password="h")
    assert list(e.value.errors) == ["email"]
    with pytest.raises(ValidationError) as e:
        await user_repo.get_by_id(adb, 0)
    assert list(e.value.errors) == ["user_id"]
    with pytest.raises(ValidationError) as e:
        await user_repo.update(adb, 1, nickname="x")  # type: ignore[call-arg]
    assert "nickname" in e.value.errors
    with pytest.raises(ValidationError) as e:
        await user_repo.find(adb, limit=0)
    assert list(e.value.errors) == ["limit"]
    assert await user_repo.count(adb) == 0


async def test_user_pages(adb: Conn) -> None:
    made = [await _user(adb) for _ in range(5)]
    seen: list[User] = []
    after: str | None = None
    for _ in range(5):
        page = await user_repo.find(adb, limit=2, after=after)
        assert isinstance(page, Page) and len(page.items) <= 2
        seen += page.items
        after = page.next_cursor
        if after is None:
            break
    assert seen == made
    with pytest.raises(ValidationError) as e:
        await user_repo.find(adb, after="garbage")
    assert list(e.value.errors) == ["after"]
    numbered = await user_repo.find_page(adb, page=2, per_page=2)
    assert isinstance(numbered, OffsetPage)
    assert (numbered.items, numbered.total, numbered.pages) == (made[2:4], 5, 3)


# ---------------------------------------------------------------------------------------- analyses


async def test_analyses_crud_and_ownership(adb: Conn) -> None:
    ann, bob = await _user(adb), await _user(adb)
    a = await data_analysis_repo.create(
        adb, user_id=ann.id, name="churn", analysis_type="cohort", parameters={"window": 30}
    )
    assert (a.status, a.parameters, a.user_id) == ("pending", {"window": 30}, ann.id)
    assert await data_analysis_repo.get_by_id(adb, a.id) == a
    assert await data_analysis_repo.get_for_user(adb, ann.id, a.id) == a
    assert await data_analysis_repo.get_for_user(adb, bob.id, a.id) is None
    assert await data_analysis_repo.get_many(adb, [a.id, 999_999]) == [a]
    f = await _file(adb, a)
    with_files = await data_analysis_repo.get_with_files(adb, a.id, user_id=ann.id)
    assert with_files is not None and [x.id for x in with_files.files] == [f.id]
    assert await data_analysis_repo.get_with_files(adb, a.id, user_id=bob.id) is None
    assert await data_analysis_repo.update(adb, a.id, user_id=bob.id, name="stolen") is None
    renamed = await data_analysis_repo.update(adb, a.id, user_id=ann.id, name="renamed", parameters={"w": 1})
    assert renamed is not None and (renamed.name, renamed.parameters) == ("renamed", {"w": 1})
    assert await data_analysis_repo.delete(adb, a.id, user_id=bob.id) is False
    assert await data_analysis_repo.delete(adb, a.id, user_id=ann.id) is True
    assert await data_analysis_repo.get_by_id(adb, a.id) is None
    assert await analysis_file_repo.get_by_id(adb, f.id) is None  # its files went with it


async def test_analysis_status_moves(adb: Conn) -> None:
    ann, bob = await _user(adb), await _user(adb)
    a, b = await _analysis(adb, ann), await _analysis(adb, ann)
    with pytest.raises(IllegalTransition) as e:
        await data_analysis_repo.complete(adb, a.id, result={"rows": 1})
    assert (e.value.current, e.value.target, e.value.field) == ("pending", "completed", "status")
    with pytest.raises(NotFound, match=f"analysis {a.id} does not exist"):
        await data_analysis_repo.start(adb, a.id, user_id=bob.id)
    running = await data_analysis_repo.start(adb, a.id, user_id=ann.id)
    assert running.status == "running" and running.started_at is not None
    done = await data_analysis_repo.complete(adb, a.id, result={"rows": 1200})
    assert (done.status, done.result) == ("completed", {"rows": 1200}) and done.completed_at is not None
    with pytest.raises(IllegalTransition):
        await data_analysis_repo.start(adb, a.id)
    await data_analysis_repo.start(adb, b.id)
    with pytest.raises(ValidationError) as v:
        await data_analysis_repo.fail(adb, b.id, error="")
    assert list(v.value.errors) == ["error"]
    failed = await data_analysis_repo.fail(adb, b.id, error="boom", user_id=ann.id)
    assert (failed.status, failed.error) == ("failed", "boom")
    assert await data_analysis_repo.count(adb, user_id=ann.id, status="failed") == 1


async def test_analysis_conflicts_and_bad_input(adb: Conn) -> None:
    with pytest.raises(IntegrityConflict) as e:
        await data_analysis_repo.create(adb, user_id=999_999, name="n", analysis_type="t")
    assert e.value.field == "user_id" and "analyses.create" in str(e.value)
    owner = await _user(adb)
    with pytest.raises(ValidationError) as v:
        await data_analysis_repo.create(adb, user_id=owner.id, name="", analysis_type="t")
    assert list(v.value.errors) == ["name"]
    with pytest.raises(ValidationError) as v:
        await data_analysis_repo.find(adb, order="sideways")
    assert list(v.value.errors) == ["order"]


async def test_analysis_pages(adb: Conn) -> None:
    ann, bob = await _user(adb), await _user(adb)
    mine = [await _analysis(adb, ann, f"a{i}") for i in range(5)]
    await _analysis(adb, bob, "theirs")
    newest: list[DataAnalysis] = []
    after: str | None = None
    while True:
        page = await data_analysis_repo.find(adb, user_id=ann.id, limit=2, after=after)
        newest += page.items
        if (after := page.next_cursor) is None:
            break
    assert newest == mine[::-1]
    oldest = await data_analysis_repo.find(adb, user_id=ann.id, order="oldest", limit=10)
    assert oldest.items == mine and oldest.next_cursor is None
    prefixed = await data_analysis_repo.find(adb, name_prefix="the", created_after=datetime.now(UTC) - timedelta(1))
    assert [x.name for x in prefixed.items] == ["theirs"]
    users_cursor = (await user_repo.find(adb, limit=1)).next_cursor
    assert users_cursor is not None
    with pytest.raises(ValidationError) as v:  # a cursor of another listing
        await data_analysis_repo.find(adb, user_id=ann.id, after=users_cursor)
    assert list(v.value.errors) == ["after"]
    numbered = await data_analysis_repo.find_page(adb, user_id=ann.id, page=1, per_page=3)
    assert (numbered.items, numbered.total) == (mine[::-1][:3], 5)
    assert await data_analysis_repo.count(adb) == 6


# ------------------------------------------------------------------------------------------- files


async def test_files_crud_ownership_and_listings(adb: Conn) -> None:
    ann, bob = await _user(adb), await _user(adb)
    a = await _analysis(adb, ann)
    args: dict[str, Any] = {"filename": "f.csv", "file_type": "csv", "size_bytes": 100, "storage_uri": "s3://b/f"}
    with pytest.raises(NotFound, match=f"analysis {a.id} does not exist"):
        await analysis_file_repo.create(adb, analysis_id=a.id, user_id=bob.id, **args)
    f = await analysis_file_repo.create(adb, analysis_id=a.id, user_id=ann.id, checksum="ab" * 32, **args)
    png = await _file(adb, a, "png", 7)
    assert await analysis_file_repo.get_by_id(adb, f.id) == f
    assert await analysis_file_repo.get_for_user(adb, ann.id, f.id) == f
    assert await analysis_file_repo.get_for_user(adb, bob.id, f.id) is None
    assert await analysis_file_repo.get_many(adb, [png.id, f.id]) == [f, png]
    assert await analysis_file_repo.list_for_analysis(adb, a.id) == [f, png]
    assert await analysis_file_repo.list_for_analysis(adb, a.id, file_type="png") == [png]
    assert await analysis_file_repo.list_for_analysis(adb, a.id, user_id=bob.id) == []
    totals = {t.file_type: (t.file_count, t.total_bytes) for t in await analysis_file_repo.totals_by_type(adb, a.id)}
    assert totals == {"csv": (1, 100), "png": (1, 7)}
    assert await analysis_file_repo.update(adb, f.id, user_id=bob.id, filename="stolen.csv") is None
    cleared = await analysis_file_repo.update(adb, f.id, user_id=ann.id, filename="mine.csv", checksum=None)
    assert cleared is not None and (cleared.filename, cleared.checksum) == ("mine.csv", None)
    first = await analysis_file_repo.find(adb, analysis_id=a.id, limit=1)
    assert first.items == [cleared] and first.next_cursor is not None
    second = await analysis_file_repo.find(adb, analysis_id=a.id, limit=1, after=first.next_cursor)
    assert second.items == [png] and second.next_cursor is None
    assert (await analysis_file_repo.find(adb, filename_prefix="mine")).items == [cleared]
    assert await analysis_file_repo.delete(adb, f.id, user_id=bob.id) is False
    assert await analysis_file_repo.delete(adb, f.id, user_id=ann.id) is True
    assert await analysis_file_repo.get_by_id(adb, f.id) is None


async def test_file_conflicts_and_bad_input(adb: Conn) -> None:
    with pytest.raises(IntegrityConflict) as e:
        await analysis_file_repo.create(
            adb, analysis_id=999_999, filename="f", file_type="csv", size_bytes=1, storage_uri="s3://b/f"
        )
    assert e.value.field == "analysis_id"
    with pytest.raises(ValidationError) as v:
        await analysis_file_repo.create(
            adb, analysis_id=1, filename="f", file_type="csv", size_bytes=-1, storage_uri="s3://b/f"
        )
    assert list(v.value.errors) == ["size_bytes"]


# -------------------------------------------------------------------------------- tool generations


async def test_generations_crud_status_and_pages(adb: Conn) -> None:
    ann, bob = await _user(adb), await _user(adb)
    g = await tool_generation_repo.create(adb, user_id=ann.id, tool_type="chart", spec={"kind": "bar"})
    other = await tool_generation_repo.create(adb, user_id=ann.id, tool_type="table")
    assert isinstance(g, ToolGeneration) and (g.status, g.spec) == ("pending", {"kind": "bar"})
    assert await tool_generation_repo.get_by_id(adb, g.id) == g
    assert await tool_generation_repo.get_for_user(adb, ann.id, g.id) == g
    assert await tool_generation_repo.get_for_user(adb, bob.id, g.id) is None
    assert await tool_generation_repo.get_many(adb, [other.id, g.id]) == [g, other]
    assert await tool_generation_repo.update(adb, g.id, user_id=bob.id, spec={}) is None
    g = await tool_generation_repo.update(adb, g.id, user_id=ann.id, spec={"kind": "pie"}) or g
    assert g.spec == {"kind": "pie"}
    with pytest.raises(IllegalTransition) as e:
        await tool_generation_repo.fail(adb, g.id, error="too early")
    assert (e.value.current, e.value.target) == ("pending", "failed")
    with pytest.raises(NotFound, match=f"tool generation {g.id} does not exist"):
        await tool_generation_repo.start(adb, g.id, user_id=bob.id)
    await tool_generation_repo.start(adb, g.id, user_id=ann.id)
    done = await tool_generation_repo.complete(adb, g.id, output=["png", 2], user_id=ann.id)
    assert (done.status, done.output) == ("completed", ["png", 2])
    await tool_generation_repo.start(adb, other.id)
    assert (await tool_generation_repo.fail(adb, other.id, error="boom")).status == "failed"
    page = await tool_generation_repo.find(adb, user_id=ann.id, limit=1)
    rest = await tool_generation_repo.find(adb, user_id=ann.id, limit=1, after=page.next_cursor)
    assert [x.id for x in page.items + rest.items] == [other.id, g.id]  # newest first
    assert rest.next_cursor is None
    assert [x.id for x in (await tool_generation_repo.find(adb, status="completed")).items] == [g.id]
    numbered = await tool_generation_repo.find_page(adb, tool_type="chart", per_page=5)
    assert [x.id for x in numbered.items] == [g.id] and numbered.total == 1
    assert await tool_generation_repo.count(adb, user_id=ann.id) == 2
    assert await tool_generation_repo.count(adb, status="pending") == 0
    assert await tool_generation_repo.delete(adb, g.id, user_id=bob.id) is False
    assert await tool_generation_repo.delete(adb, g.id, user_id=ann.id) is True
    with pytest.raises(IntegrityConflict) as c:
        await tool_generation_repo.create(adb, user_id=999_999, tool_type="chart")
    assert c.value.field == "user_id"
    with pytest.raises(ValidationError) as v:
        await tool_generation_repo.create(adb, user_id=ann.id, tool_type="")
    assert list(v.value.errors) == ["tool_type"]


# ---------------------------------------------------------------------------------- cache entries


async def test_cache_entries_versions_and_expiry(adb: Conn) -> None:
    e = await cache_entry_repo.set(adb, "user:{1}", {"name": "Ann"}, ttl=60, version=3)
    assert e is not None and e.value == {"name": "Ann"} and e.version == 3 and e.expires_at is not None
    assert await cache_entry_repo.set(adb, "user:{1}", "older", version=3) is None
    assert await cache_entry_repo.get(adb, "user:{1}") == e
    checked = await cache_entry_repo.set_checked(adb, "env", Checked(b'{"v": 1}'), ttl=None, version=2**62 + 5)
    assert checked is not None and checked.value == {"v": 1} and checked.version == 2**62 + 5
    with pytest.raises(ValidationError) as v:
        await cache_entry_repo.set_checked(adb, "env", {"v": 1}, ttl=None, version=1)  # type: ignore[arg-type]
    assert list(v.value.errors) == ["value"]
    first, second = await cache_entry_repo.put(adb, "k", 1), await cache_entry_repo.put(adb, "k", 2)
    assert (first.version, second.version) == (1, 2)
    assert await cache_entry_repo.invalidate(adb, ["k", "never"]) == 2
    assert await cache_entry_repo.invalidate(adb, []) == 0
    tomb = await cache_entry_repo.peek(adb, "k")
    assert tomb is not None and tomb.value is None and tomb.version == 3
    assert await cache_entry_repo.get(adb, "k") is None
    await cache_entry_repo.set(adb, "short", 1, ttl=0.05)
    await asyncio.sleep(0.1)
    assert await cache_entry_repo.get(adb, "short") is None
    assert await cache_entry_repo.count(adb) == 2  # user:{1} and env
    assert await cache_entry_repo.purge_expired(adb) == 1
    await cache_entry_repo.put(adb, "pre:a", 1)
    await cache_entry_repo.put(adb, "pre:b", 2)
    assert await cache_entry_repo.delete_prefix(adb, "pre:") == 2
    assert await cache_entry_repo.delete(adb, "user:{1}") is True
    assert await cache_entry_repo.delete(adb, "user:{1}") is False
    with pytest.raises(ValidationError) as v:
        await cache_entry_repo.set(adb, "k", None)
    assert list(v.value.errors) == ["value"]
    with pytest.raises(ValidationError) as v:
        await cache_entry_repo.set(adb, "k", 1, version=cache_entry_repo.MAX_VERSION + 1)
    assert list(v.value.errors) == ["version"]


async def test_cache_entries_pending_invalidations(adb: Conn) -> None:
    assert await cache_entry_repo.can_record_invalidations(adb) is True
    await cache_entry_repo.put(adb, "p:x", 1)
    ids = await cache_entry_repo.record_invalidations(adb, ["p:x", "p:y"])
    other = await cache_entry_repo.record_invalidations(adb, ["q:x"], kind="api", table_done=True)
    assert await cache_entry_repo.record_invalidations(adb, []) == []
    pending = await cache_entry_repo.pending_invalidations(adb, "p:")
    assert [(p.id, p.kind, p.key, p.table_done) for p in pending] == [
        (ids[0], "key", "p:x", False),
        (ids[1], "key", "p:y", False),
    ]
    assert type(pending[0]) is datalayer.cache_entry_repo.PendingInvalidation  # one class for both APIs
    await cache_entry_repo.apply_invalidations_to_table(adb, ids)
    assert await cache_entry_repo.get(adb, "p:x") is None
    assert all(p.table_done for p in await cache_entry_repo.pending_invalidations(adb, "p:"))
    await cache_entry_repo.forget_invalidations(adb, ids)
    assert await cache_entry_repo.pending_invalidations(adb, "p:") == []
    await cache_entry_repo.settle_invalidations(adb, other, ["q:x"], redis_done=True)
    assert await cache_entry_repo.pending_invalidations(adb, "q:") == []
    tomb = await cache_entry_repo.peek(adb, "q:x")
    assert tomb is not None and tomb.value is None
    with pytest.raises(ValidationError) as v:
        await cache_entry_repo.record_invalidations(adb, ["k"], kind="other")
    assert list(v.value.errors) == ["kind"]
