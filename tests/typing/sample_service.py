"""A small service using every public function, type-checked with mypy --strict (see test_typing.py).

It is also run for real by test_typing.py, so it stays correct, not just well-typed.
"""

from __future__ import annotations

from collections.abc import Iterator

import datalayer
from datalayer import (
    DataLayerError,
    IntegrityConflict,
    OffsetPage,
    Page,
    Settings,
    User,
    ValidationError,
    check,
    check_database_health,
    connection,
    ensure_log_partitions,
    get_db,
    hash_password,
    list_log_partitions,
    migration_status,
    needs_rehash,
    on_commit,
    on_rollback,
    plan_sql,
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
    created: list[str] = ensure_log_partitions(db, ahead=3)
    findings = [str(f) for f in check(db)]
    plan: str = plan_sql()
    analysis = validate_analysis_data({"user_id": 1, "name": "n", "analysis_type": "t"})
    return {"health": health["status"], "migrations": statuses, "partitions": partitions, "created": created,
            "findings": findings, "plan": plan, "analysis_ok": analysis["valid"]}


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
    out = operations(db)
    out["pool_max"] = settings.pool_max_size
    out["version"] = datalayer.__version__
    return out
