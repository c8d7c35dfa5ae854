"""tool_generation_repo: CRUD, owner scoping, listings by status and type, status moves."""

from __future__ import annotations

from typing import Any

import pytest
from factories import generation, user

from datalayer import IllegalTransition, NotFound, ValidationError
from datalayer import tool_generation_repo as repo


def test_crud(db: Any) -> None:
    ann = user(db)
    g = repo.create(db, user_id=ann.id, tool_type="chart", spec={"prompt": "sales by month", "size": [800, 600]})
    assert g.status == "pending" and g.spec["size"] == [800, 600] and g.output is None
    assert repo.get_by_id(db, g.id) == g
    h = repo.update(db, g.id, spec={"prompt": "x"})
    assert h is not None and h.spec == {"prompt": "x"} and h.tool_type == "chart"
    assert repo.get_many(db, [g.id]) == [h]
    assert repo.delete(db, g.id) and repo.get_by_id(db, g.id) is None


def test_lifecycle_and_owner(db: Any) -> None:
    ann, bob = user(db), user(db)
    g = generation(db, ann)
    with pytest.raises(NotFound):
        repo.start(db, g.id, user_id=bob.id)
    repo.start(db, g.id, user_id=ann.id)
    done = repo.complete(db, g.id, output=["a", "b"])
    assert done.status == "completed" and done.output == ["a", "b"]
    with pytest.raises(IllegalTransition):
        repo.fail(db, g.id, error="late")
    assert repo.get_for_user(db, bob.id, g.id) is None
    assert repo.get_for_user(db, ann.id, g.id) == done
    assert repo.update(db, g.id, user_id=bob.id, tool_type="x") is None
    assert repo.delete(db, g.id, user_id=bob.id) is False


def test_find_by_status_and_type(db: Any) -> None:
    ann, bob = user(db), user(db)
    charts = [generation(db, ann, "chart") for _ in range(3)]
    table = generation(db, ann, "table")
    generation(db, bob, "chart")
    repo.start(db, charts[0].id)
    assert {g.id for g in repo.find(db, user_id=ann.id, tool_type="chart").items} == {c.id for c in charts}
    assert [g.id for g in repo.find(db, user_id=ann.id, status="running").items] == [charts[0].id]
    assert [g.id for g in repo.find(db, user_id=ann.id, tool_type="table").items] == [table.id]
    assert len(repo.find(db, tool_type="chart").items) == 4
    page = repo.find(db, user_id=ann.id, limit=3)
    rest = repo.find(db, user_id=ann.id, limit=3, after=page.next_cursor)
    assert len(page.items) == 3 and len(rest.items) == 1 and rest.next_cursor is None
    assert repo.count(db, user_id=ann.id, tool_type="chart") == 3
    numbered = repo.find_page(db, tool_type="chart", per_page=2, page=2)
    assert numbered.total == 4 and len(numbered.items) == 2


@pytest.mark.parametrize("kwargs", [{"tool_type": ""}, {"spec": []}, {"user_id": "1"}])
def test_bad_input(db: Any, kwargs: dict[str, Any]) -> None:
    ann = user(db)
    with pytest.raises(ValidationError):
        repo.create(db, **{"user_id": ann.id, "tool_type": "chart", **kwargs})
    assert repo.count(db) == 0
