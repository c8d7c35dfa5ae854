"""Every line marked `# E: <mypy error code>` must be reported by mypy --strict (see test_typing.py)."""

from __future__ import annotations

from datalayer import User, connection, transaction, user_repo


def wrong_argument_types() -> None:
    with connection() as db:
        user_repo.get_by_id(db, "42")  # E: arg-type
        user_repo.create(db, username="ann", email="a@example.com", hashed_password=None)  # E: arg-type
        user_repo.find(db, limit="50")  # E: arg-type


def optional_treated_as_record() -> str:
    with connection() as db:
        user = user_repo.get_by_id(db, 1)
        return user.email  # E: union-attr


def optional_assigned_to_record() -> User:
    with connection() as db:
        user: User = user_repo.get_by_email(db, "a@example.com")  # E: assignment
        return user


def unknown_keyword_in_update() -> None:
    with transaction() as db:
        user_repo.update(db, 1, nickname="ann")  # E: call-arg
        user_repo.update(db, 1, is_active="yes")  # E: arg-type


def missing_keyword() -> None:
    with connection() as db:
        user_repo.create(db, username="ann", email="a@example.com")  # E: call-arg


def repository_misuse() -> None:
    from datalayer import data_analysis_repo, system_log_repo

    with connection() as db:
        data_analysis_repo.update(db, 1, status="completed")  # E: call-arg
        data_analysis_repo.find(db, limit=None)  # E: arg-type
        a = data_analysis_repo.get_for_user(db, 1, 2)
        print(a.parameters)  # E: union-attr
        system_log_repo.find(db, since="yesterday", until=None)  # E: arg-type


def sql_results_misused() -> None:
    from pathlib import Path

    from datalayer import sql
    from datalayer.records import User as Record

    notes = sql.load(Path(__file__).parent / "sql" / "notes.sql")
    get = notes.bind("get", Record)
    count = notes.bind("count", int)
    with connection() as db:
        record: Record = get.maybe(db, note_id=1)  # E: assignment
        title: str = count.scalar(db)  # E: assignment
        rows: list[str] = notes.bind("every", Record).many(db)  # E: assignment
        nullable: int = notes.bind("count", int, nullable=True).scalar(db)  # E: assignment
        notes.bind("load").copy(db, [], note_id=1)  # E: arg-type
        print(record, title, rows, nullable)


async def async_misused() -> None:
    from pathlib import Path

    from datalayer import aio, sql
    from datalayer.records import User as Record

    get = sql.load(Path(__file__).parent / "sql" / "notes.sql").bind("get", Record)
    with connection() as db:
        await aio.user_repo.get_by_id(db, 1)  # E: arg-type
        await get.amaybe(db, note_id=1)  # E: arg-type
    async with aio.connection() as adb:
        user = aio.user_repo.get_by_id(adb, 1)
        print(user.username)  # E: attr-defined
        get.maybe(adb, note_id=1)  # E: arg-type
        aio.on_commit(lambda: None)  # E: unused-coroutine
