"""data_analysis_repo: CRUD, owner scoping, listings, status moves, analysis with files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import analysis, file, user

from datalayer import (
    AnalysisWithFiles,
    IllegalTransition,
    IntegrityConflict,
    NotFound,
    ValidationError,
    transaction,
)
from datalayer import (
    data_analysis_repo as repo,
)


def test_create_read_update_delete(db: Any) -> None:
    ann = user(db)
    a = repo.create(db, user_id=ann.id, name="  churn ", analysis_type="cohort", parameters={"window": 30})
    assert (a.name, a.analysis_type, a.parameters, a.status) == ("churn", "cohort", {"window": 30}, "pending")
    assert a.result is None and a.error is None and a.started_at is None and a.completed_at is None
    assert repo.get_by_id(db, a.id) == a
    b = repo.update(db, a.id, name="retention", parameters={"window": 7, "nested": {"x": [1, 2]}})
    assert b is not None and b.name == "retention" and b.parameters == {"window": 7, "nested": {"x": [1, 2]}}
    assert b.analysis_type == "cohort"
    assert repo.delete(db, a.id) is True
    assert repo.get_by_id(db, a.id) is None and repo.delete(db, a.id) is False
    assert repo.update(db, a.id, name="x") is None


def test_create_for_missing_user_names_the_field(db: Any) -> None:
    with pytest.raises(IntegrityConflict) as e:
        repo.create(db, user_id=999_999, name="n", analysis_type="t")
    assert e.value.field == "user_id" and "analyses.create" in str(e.value)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"analysis_type": ""}, "analysis_type"),
    ({"parameters": ["not", "a", "dict"]}, "parameters"),
    ({"parameters": {"bad": object()}}, "parameters"),
    ({"parameters": {"nul": "a\x00b"}}, "parameters"),
    ({"parameters": {1: "int key"}}, "parameters"),
    ({"user_id": 0}, "user_id"),
])
def test_bad_input(db: Any, kwargs: dict[str, Any], field: str) -> None:
    ann = user(db)
    args: dict[str, Any] = {"user_id": ann.id, "name": "n", "analysis_type": "t", **kwargs}
    with pytest.raises(ValidationError) as e:
        repo.create(db, **args)
    assert field in e.value.errors
    assert repo.count(db) == 0


def test_owner_scoping(db: Any) -> None:
    ann, bob = user(db), user(db)
    a = analysis(db, ann)
    assert repo.get_for_user(db, ann.id, a.id) == a
    assert repo.get_for_user(db, bob.id, a.id) is None
    assert repo.get_with_files(db, a.id, user_id=bob.id) is None
    assert repo.update(db, a.id, user_id=bob.id, name="stolen") is None
    assert repo.delete(db, a.id, user_id=bob.id) is False
    with pytest.raises(NotFound):
        repo.start(db, a.id, user_id=bob.id)
    assert repo.get_by_id(db, a.id) == a
    assert repo.find(db, user_id=bob.id).items == []
    assert repo.update(db, a.id, user_id=ann.id, name="mine") is not None


def test_lifecycle(db: Any) -> None:
    a = analysis(db, user(db))
    running = repo.start(db, a.id)
    assert running.status == "running" and running.started_at is not None and running.completed_at is None
    done = repo.complete(db, a.id, result={"rows": 1200, "items": [1, 2]})
    assert done.status == "completed" and done.result == {"rows": 1200, "items": [1, 2]}
    assert done.completed_at is not None and done.completed_at >= done.started_at  # type: ignore[operator]
    with pytest.raises(IllegalTransition) as e:
        repo.start(db, a.id)
    assert (e.value.current, e.value.target, e.value.field) == ("completed", "running", "status")
    assert "pending -> running -> completed | failed" in str(e.value)
    b = analysis(db, user(db))
    with pytest.raises(IllegalTransition, match="only from running"):
        repo.complete(db, b.id, result=1)
    with pytest.raises(IllegalTransition):
        repo.fail(db, b.id, error="boom")
    repo.start(db, b.id)
    failed = repo.fail(db, b.id, error="division by zero")
    assert failed.status == "failed" and failed.error == "division by zero" and failed.result is None
    with pytest.raises(NotFound):
        repo.start(db, 999_999)
    with pytest.raises(ValidationError):
        repo.complete(db, b.id, result=None)


def test_transition_inside_rolled_back_transaction_leaves_nothing(db: Any) -> None:
    a = analysis(db, user(db))
    with pytest.raises(RuntimeError), transaction(db):
        repo.start(db, a.id)
        raise RuntimeError
    assert repo.get_by_id(db, a.id) == a


def test_with_files_one_round_trip(db: Any) -> None:
    a = analysis(db, user(db))
    empty = repo.get_with_files(db, a.id)
    assert isinstance(empty, AnalysisWithFiles) and empty.files == [] and empty.name == a.name
    f1, f2 = file(db, a, "csv", 10), file(db, a, "png", 20)
    full = repo.get_with_files(db, a.id)
    assert full is not None and full.files == [f1, f2]
    assert full.files[0].created_at.tzinfo is not None
    assert repo.get_with_files(db, 999_999) is None


def test_find_filters_and_keyset(db: Any) -> None:
    ann, bob = user(db), user(db)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made = []
    for i in range(9):
        a = analysis(db, ann, name=f"{'report' if i % 2 else 'model'} {i}", analysis_type="a" if i < 5 else "b")
        db.execute("UPDATE data_analyses SET created_at = %s WHERE id = %s", (base + timedelta(hours=i), a.id))
        made.append(a.id)
    analysis(db, bob)
    repo.start(db, made[2])
    newest = [made[i] for i in reversed(range(9))]
    seen, page = [], repo.find(db, user_id=ann.id, limit=4)
    while True:
        seen += [a.id for a in page.items]
        if not page.has_more:
            break
        page = repo.find(db, user_id=ann.id, limit=4, after=page.next_cursor)
    assert seen == newest
    oldest = repo.find(db, user_id=ann.id, order="oldest", limit=50)
    assert [a.id for a in oldest.items] == made
    assert [a.id for a in repo.find(db, user_id=ann.id, status="running").items] == [made[2]]
    assert [a.id for a in repo.find(db, status="running").items] == [made[2]]
    assert {a.id for a in repo.find(db, user_id=ann.id, analysis_type="b").items} == set(made[5:])
    assert [a.id for a in repo.find(db, user_id=ann.id, name_prefix="report").items] == [made[7], made[5], made[3], made[1]]
    window = repo.find(db, user_id=ann.id, created_after=base + timedelta(hours=2), created_before=base + timedelta(hours=4))
    assert [a.id for a in window.items] == [made[3], made[2]]
    assert len(repo.find(db).items) == 10
    # a cursor of one listing is refused by another
    first = repo.find(db, user_id=ann.id, limit=2)
    with pytest.raises(ValidationError):
        repo.find(db, limit=2, after=first.next_cursor)
    with pytest.raises(ValidationError):
        repo.find(db, user_id=ann.id, order="oldest", after=first.next_cursor)


def test_name_prefix_is_literal(db: Any) -> None:
    ann = user(db)
    analysis(db, ann, name="100% done")
    analysis(db, ann, name="1000 things")
    analysis(db, ann, name="a_b")
    analysis(db, ann, name="axb")
    assert [a.name for a in repo.find(db, name_prefix="100%").items] == ["100% done"]
    assert [a.name for a in repo.find(db, name_prefix="a_").items] == ["a_b"]


@pytest.mark.parametrize("kwargs", [
    {"status": "done"}, {"order": "random"}, {"created_after": datetime(2026, 1, 1)}, {"limit": 0},
    {"name_prefix": "x" * 300}, {"analysis_type": 5}, {"user_id": -1}, {"after": "not-a-cursor"},
])
def test_bad_filters(db: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        repo.find(db, **kwargs)


def test_get_many_and_pages(db: Any) -> None:
    ann = user(db)
    items = [analysis(db, ann) for _ in range(5)]
    assert repo.get_many(db, []) == []
    assert repo.get_many(db, [items[3].id, items[1].id, 999_999]) == [items[1], items[3]]
    page = repo.find_page(db, user_id=ann.id, page=2, per_page=2)
    assert page.total == 5 and page.pages == 3 and len(page.items) == 2
    assert repo.count(db, user_id=ann.id, status="pending") == 5


def test_deleting_user_cascades(db: Any) -> None:
    from datalayer import analysis_file_repo, user_repo

    ann = user(db)
    a = analysis(db, ann)
    f = file(db, a)
    assert user_repo.delete(db, ann.id)
    assert repo.get_by_id(db, a.id) is None and analysis_file_repo.get_by_id(db, f.id) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [float("-inf")]])
def test_non_finite_numbers_refused(db: Any, bad: Any) -> None:
    with pytest.raises(ValidationError, match="NaN"):
        repo.create(db, user_id=user(db).id, name="n", analysis_type="t", parameters={"x": bad})
