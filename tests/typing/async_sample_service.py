"""The README's examples in their async form, type-checked with mypy --strict and run by test_typing.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from datalayer import (
    AnalysisFile,
    DataAnalysis,
    IllegalTransition,
    IntegrityConflict,
    OffsetPage,
    Page,
    SystemLogEntry,
    User,
    ValidationError,
    validate_user_data,
)
from datalayer.aio import (
    AsyncConnection,
    analysis_file_repo,
    cache_entry_repo,
    connection,
    data_analysis_repo,
    get_cache_manager,
    get_db,
    hash_password,
    log_system_event,
    on_commit,
    run_in_transaction,
    system_log_repo,
    tool_generation_repo,
    transaction,
    user_repo,
    verify_password,
)


async def signup(username: str, email: str, password: str, events: list[str]) -> User:
    result = validate_user_data({"username": username, "email": email, "password": password})
    if not result["valid"]:
        raise ValidationError(result["errors"])
    async with transaction() as db:
        user = await user_repo.create_with_password(db, **result["data"])
        await on_commit(lambda: events.append(f"welcome {user.id}"))
    return user


async def login(db: AsyncConnection, username: str, password: str) -> User | None:
    user = await user_repo.get_by_username(db, username)
    if user is None or not await verify_password(password, user.hashed_password):
        return None
    return user


async def users_flow(db: AsyncConnection) -> dict[str, object]:
    user = await user_repo.create(db, username="ann", email="Ann@Example.com",
                                  hashed_password=await hash_password("correct horse"))
    assert await user_repo.get_by_id(db, user.id) == user
    same = await user_repo.get_by_email(db, "ann@example.com")
    changed = await user_repo.update(db, user.id, is_active=False)
    page: Page[User] = await user_repo.find(db, limit=50, is_active=False)
    more = await user_repo.find(db, limit=50, after=page.next_cursor) if page.next_cursor else page
    numbered: OffsetPage[User] = await user_repo.find_page(db, page=1, per_page=10)
    return {"same": same == user, "inactive": changed is not None and not changed.is_active,
            "listed": len(page.items) + len(more.items), "total": numbered.total}


async def analyses_flow(db: AsyncConnection, owner: User, other: User) -> dict[str, object]:
    a: DataAnalysis = await data_analysis_repo.create(db, user_id=owner.id, name="churn", analysis_type="cohort",
                                                      parameters={"window": 30})
    assert await data_analysis_repo.get_for_user(db, other.id, a.id) is None
    await data_analysis_repo.start(db, a.id)
    done = await data_analysis_repo.complete(db, a.id, result={"rows": 1200})
    try:
        await data_analysis_repo.fail(db, a.id, error="timeout")
    except IllegalTransition as e:
        assert e.current == "completed"
    f: AnalysisFile = await analysis_file_repo.create(db, analysis_id=a.id, filename="in.csv", file_type="csv",
                                                      size_bytes=1024, storage_uri="s3://bucket/in.csv")
    with_files = await data_analysis_repo.get_with_files(db, a.id, user_id=owner.id)
    totals = await analysis_file_repo.totals_by_type(db, a.id)
    page = await data_analysis_repo.find(db, user_id=owner.id, status="completed", order="newest", limit=50)
    g = await tool_generation_repo.create(db, user_id=owner.id, tool_type="chart", spec={"kind": "bar"})
    generations = await tool_generation_repo.find(db, user_id=owner.id, tool_type="chart")
    return {"result": done.result, "files": with_files is not None and with_files.files == [f],
            "types": [t.file_type for t in totals], "listed": len(page.items),
            "generations": [x.id for x in generations.items] == [g.id]}


async def events_flow(db: AsyncConnection) -> dict[str, object]:
    event: SystemLogEntry = await log_system_event(db, service="billing", level="INFO", message="hello",
                                                   details={"k": 1})
    await system_log_repo.bulk_insert(db, [{"service": "billing", "level": "DEBUG", "message": f"b{i}"}
                                           for i in range(3)])
    now = datetime.now(UTC)
    found = await system_log_repo.find(db, since=now - timedelta(hours=1), until=now + timedelta(minutes=1),
                                       service="billing")
    stored = await cache_entry_repo.set(db, "user:{42}", {"name": "Ann"}, ttl=600, version=7)
    return {"event": event.message, "found": len(found.items), "stored": stored is not None}


async def cache_flow(db: AsyncConnection, user: User) -> dict[str, object]:
    cache = get_cache_manager()
    await cache.cache_analysis_result("analysis_123", {"result": "data"}, ttl=3600)
    result = await cache.get_cached_analysis_result("analysis_123")
    await cache.cache_user_data("user_123", {"name": "John"}, ttl=1800)

    async def load() -> User | None:
        return await user_repo.get_by_id(db, user.id)

    cached: User | None = await cache.get_or_load(cache.keys.user(user.id), load, User, ttl=600)
    async with transaction(db):
        await user_repo.update(db, user.id, email="new@example.com")
        await cache.invalidate_user_cache(user.id, db=db)  # sent after COMMIT
    reloaded: User | None = await cache.get_or_load(cache.keys.user(user.id), load, User, ttl=600)
    stats: dict[str, Any] = await cache.stats()
    await cache.flush()
    return {"seed_result": result, "cached": cached == user,
            "fresh": reloaded is not None and reloaded.email == "new@example.com", "stats": "l1" in stats}


async def transfer(db: AsyncConnection) -> int:
    return await user_repo.count(db)


async def dependency() -> AsyncIterator[AsyncConnection]:
    async for db in get_db():
        yield db


async def run() -> dict[str, object]:
    events: list[str] = []
    out: dict[str, object] = {}
    async with connection() as db:
        out |= await users_flow(db)
        owner = await signup("owner_a", "owner@example.com", "correct horse battery", events)
        try:
            await signup("owner_a", "x@example.com", "correct horse battery", events)
        except IntegrityConflict as e:
            out["conflict"] = e.field
        other = await user_repo.create(db, username="other_a", email="other@example.com", hashed_password="h")
        out["login"] = await login(db, "owner_a", "correct horse battery") == owner
        out |= await analyses_flow(db, owner, other)
        out |= await events_flow(db)
        out |= await cache_flow(db, owner)
        out["count"] = await run_in_transaction(db, transfer, retries=3)
    async for db in dependency():
        out["dependency"] = await user_repo.count(db)
    out["events"] = events
    return out
