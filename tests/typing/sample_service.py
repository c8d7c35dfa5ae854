"""A small service using every public function, type-checked with mypy --strict (see test_typing.py).

It is also run for real by test_typing.py, so it stays correct, not just well-typed.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import datalayer
from datalayer import (
    AnalysisFile,
    AnalysisWithFiles,
    BackupError,
    CacheEntry,
    CacheManager,
    DataAnalysis,
    DataLayerError,
    FileTypeTotal,
    IllegalTransition,
    IntegrityConflict,
    MigrationError,
    OffsetPage,
    Page,
    Settings,
    SystemLogEntry,
    SystemLogHandler,
    ToolGeneration,
    User,
    ValidationError,
    analysis_file_repo,
    backup_database_data,
    cache_entry_repo,
    check,
    check_database_health,
    cleanup_old_data,
    connection,
    data_analysis_repo,
    ensure_log_partitions,
    get_cache_manager,
    get_database_stats,
    get_db,
    hash_password,
    list_log_partitions,
    log_system_event,
    migration_status,
    needs_rehash,
    on_commit,
    on_rollback,
    plan_sql,
    reset_database,
    restore_database_data,
    setup_database,
    system_log_repo,
    tool_generation_repo,
    transaction,
    user_repo,
    validate_analysis_data,
    validate_user_data,
    verify_password,
)
from datalayer.pool import DataLayerConnection, DataLayerPool


def signup(username: str, email: str, password: str) -> User:
    result = validate_user_data({"username": username, "email": email, "password": password})
    if not result["valid"]:
        raise ValidationError(result["errors"])
    data = result["data"]
    events: list[str] = []
    with transaction() as db:
        user = user_repo.create_with_password(db, username=data["username"], email=data["email"],
                                              password=data["password"])
        on_commit(lambda: events.append(f"welcome {user.id}"))
        on_rollback(lambda: events.append("rolled back"))
    return user


def login(username: str, password: str) -> User | None:
    with connection() as db:
        user = user_repo.get_by_username(db, username)
        if user is None or not verify_password(password, user.hashed_password):
            return None
        if needs_rehash(user.hashed_password):
            updated = user_repo.update(db, user.id, hashed_password=hash_password(password))
            return updated
        return user


def deactivate(db: DataLayerConnection, user_id: int) -> bool:
    changed: User | None = user_repo.update(db, user_id, is_active=False)
    return changed is not None and not changed.is_active


def listing(db: DataLayerConnection) -> tuple[list[str], int]:
    names: list[str] = []
    page: Page[User] = user_repo.find(db, limit=2, is_active=True)
    names += [u.username for u in page.items]
    while page.next_cursor is not None:
        page = user_repo.find(db, limit=2, after=page.next_cursor, is_active=True)
        names += [u.username for u in page.items]
    numbered: OffsetPage[User] = user_repo.find_page(db, page=1, per_page=10)
    return names, numbered.total


def lookups(db: DataLayerConnection, user: User) -> list[User]:
    found: list[User] = []
    by_id = user_repo.get_by_id(db, user.id)
    by_email = user_repo.get_by_email(db, user.email.upper())
    if by_id is not None and by_email is not None:
        found += [by_id, by_email]
    found += user_repo.get_many(db, [user.id])
    return found


def fastapi_dependency() -> Iterator[DataLayerConnection]:
    yield from get_db()


def operations(db: DataLayerConnection) -> dict[str, object]:
    health = check_database_health()
    statuses = [(m.id, m.applied, m.changed) for m in migration_status()]
    partitions = [p.name for p in list_log_partitions(db)]
    created: int = ensure_log_partitions(db, ahead=3)
    findings = [str(f) for f in check(db)]
    plan: str = plan_sql()
    analysis = validate_analysis_data({"user_id": 1, "name": "n", "analysis_type": "t"})
    return {"health": health["status"], "migrations": statuses, "partitions": partitions, "created": created,
            "findings": findings, "plan": plan, "analysis_ok": analysis["valid"]}


def analyses_flow(db: DataLayerConnection, owner: User, other: User) -> dict[str, object]:
    request = validate_analysis_data({"user_id": owner.id, "name": "churn", "analysis_type": "cohort",
                                      "parameters": {"window": 30}})
    assert request["valid"]
    data = request["data"]
    a: DataAnalysis = data_analysis_repo.create(db, user_id=data["user_id"], name=data["name"],
                                                analysis_type=data["analysis_type"], parameters=data["parameters"])
    assert data_analysis_repo.get_for_user(db, other.id, a.id) is None
    assert data_analysis_repo.get_by_id(db, a.id) == a
    f: AnalysisFile = analysis_file_repo.create(db, analysis_id=a.id, filename="in.csv", file_type="csv",
                                                size_bytes=10, storage_uri="s3://b/in.csv")
    renamed = analysis_file_repo.update(db, f.id, filename="input.csv", checksum=None)
    totals: list[FileTypeTotal] = analysis_file_repo.totals_by_type(db, a.id)
    with_files: AnalysisWithFiles | None = data_analysis_repo.get_with_files(db, a.id, user_id=owner.id)
    assert with_files is not None and with_files.files == [renamed]
    data_analysis_repo.update(db, a.id, user_id=owner.id, name="churn v2")
    data_analysis_repo.start(db, a.id)
    done = data_analysis_repo.complete(db, a.id, result={"rows": 3})
    try:
        data_analysis_repo.fail(db, a.id, error="too late")
    except IllegalTransition as e:
        assert e.current == "completed"
    page: Page[DataAnalysis] = data_analysis_repo.find(db, user_id=owner.id, status="completed", limit=10)
    numbered: OffsetPage[DataAnalysis] = data_analysis_repo.find_page(db, user_id=owner.id)
    files = analysis_file_repo.list_for_analysis(db, a.id, file_type="csv", user_id=owner.id)
    files += analysis_file_repo.find(db, analysis_id=a.id).items + analysis_file_repo.get_many(db, [f.id])
    assert analysis_file_repo.get_by_id(db, f.id) == analysis_file_repo.get_for_user(db, owner.id, f.id)
    assert analysis_file_repo.delete(db, f.id, user_id=owner.id)

    g: ToolGeneration = tool_generation_repo.create(db, user_id=owner.id, tool_type="chart", spec={"kind": "bar"})
    tool_generation_repo.update(db, g.id, spec={"kind": "line"})
    tool_generation_repo.start(db, g.id)
    tool_generation_repo.complete(db, g.id, output={"url": "s3://b/chart.png"})
    failed = tool_generation_repo.create(db, user_id=owner.id, tool_type="table")
    tool_generation_repo.start(db, failed.id, user_id=owner.id)
    tool_generation_repo.fail(db, failed.id, error="timeout")
    generations = tool_generation_repo.find(db, user_id=owner.id, tool_type="chart").items
    generations += tool_generation_repo.get_many(db, [g.id]) + tool_generation_repo.find_page(db, status="failed").items
    assert tool_generation_repo.get_for_user(db, owner.id, g.id) == tool_generation_repo.get_by_id(db, g.id)
    assert tool_generation_repo.count(db, user_id=owner.id) == 2 and tool_generation_repo.delete(db, failed.id)
    deleted = data_analysis_repo.delete(db, a.id, user_id=owner.id)
    return {"result": done.result, "types": [t.file_type for t in totals], "listed": len(page.items),
            "total": numbered.total, "files": len(files), "generations": len(generations), "deleted": deleted,
            "analyses": data_analysis_repo.count(db) + len(data_analysis_repo.get_many(db, [a.id]))}


def events_and_cache(db: DataLayerConnection, pool: DataLayerPool) -> dict[str, object]:
    event: SystemLogEntry = log_system_event(db, service="sample", level="info", message="hello",
                                             details={"k": 1})
    assert system_log_repo.get_by_id(db, event.id) == event
    system_log_repo.create(db, service="sample", level="ERROR", message="boom")
    system_log_repo.bulk_insert(db, [{"service": "sample", "level": "DEBUG", "message": f"bulk {i}"} for i in range(3)])
    handler = SystemLogHandler(service="sample-handler", pool=pool, flush_interval=0.05)
    logger = logging.getLogger("sample")
    logger.addHandler(handler)
    logger.warning("through the handler")
    handler.drain(5)
    logger.removeHandler(handler)
    handler.close()
    now = datetime.now(UTC)
    recent = system_log_repo.find(db, since=now - timedelta(hours=1), until=now + timedelta(minutes=1), limit=100)
    levels = {c.level: c.count for c in system_log_repo.count_by_level(db, since=now - timedelta(hours=1),
                                                                        until=now + timedelta(minutes=1))}
    landed: bool = system_log_repo.record_landed(db, record_id="none", service="sample", first=now - timedelta(hours=1),
                                                 last=now)
    assert not landed
    stored: CacheEntry | None = cache_entry_repo.set(db, "sample:{1}", {"v": 1}, ttl=60, version=1)
    assert stored is not None and cache_entry_repo.get(db, "sample:{1}") == stored
    cache_entry_repo.set(db, "sample:{2}", [1, 2])
    removed = cache_entry_repo.delete(db, "sample:{1}") + cache_entry_repo.delete_prefix(db, "sample:")
    return {"events": len(recent.items), "levels": levels, "cache_removed": removed,
            "cache_left": cache_entry_repo.count(db) + cache_entry_repo.purge_expired(db)}


def cached_user(cache: CacheManager, db: DataLayerConnection, user_id: int) -> User | None:
    return cache.get_or_load(cache.keys.user(user_id), lambda: user_repo.get_by_id(db, user_id), User, ttl=600)


def cache_flow(db: DataLayerConnection, user: User) -> dict[str, object]:
    cache = get_cache_manager()
    # A new manager keeps nothing in L1 until its invalidation listener is subscribed (messages sent
    # before that could be missed): wait for it, bounded, so the second read below can hit L1.
    deadline = time.monotonic() + 5
    while not cache.stats()["subscribed"] and time.monotonic() < deadline:
        time.sleep(0.01)
    first = cached_user(cache, db, user.id)
    again = cached_user(cache, db, user.id)
    cache.cache_analysis_result("analysis_123", {"result": "data"}, ttl=3600)
    result = cache.get_cached_analysis_result("analysis_123")
    cache.cache_user_data("user_123", {"name": "John"}, ttl=1800)
    with transaction(db):
        user_repo.update(db, user.id, is_active=True)
        cache.invalidate_user_cache(user.id, db=db)
    cache.invalidate_user_cache("user_123")
    stats = cache.stats()
    cache.flush()
    return {"cached_equal": first == again == user, "seed_result": result, "l1_hits": stats["l1"]["hits"]}


def operations_with_files(db: DataLayerConnection) -> dict[str, object]:
    stats = get_database_stats(db)
    cleaned = cleanup_old_data(db, days=30)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backup.json"
        written: bool = backup_database_data(db, path)
        try:
            restore_database_data(db, path)  # the tables are not empty: refused, nothing changes
        except BackupError as e:
            refused = "empty" in str(e)
    try:
        reset_database()  # without confirm=True: refused
    except MigrationError:
        refused = refused and True
    applied = setup_database()
    return {"users": stats["users"], "cleaned": cleaned["system_logs"], "backup": written, "refused": refused,
            "applied": applied}


def run(pool: DataLayerPool) -> dict[str, object]:
    """Exercise everything above against ``pool`` (the default pool)."""
    settings: Settings = pool.settings
    ann = signup("ann_sample", "Ann@Example.com", "correct horse battery")
    try:
        signup("ann_sample", "other@example.com", "correct horse battery")
    except IntegrityConflict as e:
        assert e.field == "username"
    try:
        signup("x", "bad", "short")
    except DataLayerError as e:
        assert isinstance(e, ValidationError) and set(e.errors) == {"username", "email", "password"}
    assert login("ann_sample", "correct horse battery") == ann
    assert login("ann_sample", "wrong") is None
    signup("bob_sample", "bob@example.com", "correct horse battery")
    db = next(get_db())
    assert lookups(db, ann) == [ann, ann, ann]
    names, total = listing(db)
    assert names == ["ann_sample", "bob_sample"] and total == 2
    assert deactivate(db, ann.id)
    assert user_repo.delete(db, ann.id) and user_repo.count(db) == 1
    carol = signup("carol_sample", "carol@example.com", "correct horse battery")
    bob = user_repo.get_by_username(db, "bob_sample")
    assert bob is not None
    out = operations(db)
    out |= analyses_flow(db, carol, bob)
    out |= events_and_cache(db, pool)
    out |= cache_flow(db, carol)
    out |= operations_with_files(db)
    out["pool_max"] = settings.pool_max_size
    out["version"] = datalayer.__version__
    return out
