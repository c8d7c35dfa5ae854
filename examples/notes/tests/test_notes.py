import pytest
from notes import repo

from datalayer import Connection, ValidationError, transaction


def test_create_then_get(db: Connection) -> None:
    note = repo.create(db, title="groceries", body="milk, eggs", tags=["home"])
    assert repo.get(db, note.id) == note
    assert note.tags == ["home"]


def test_get_missing_is_none(db: Connection) -> None:
    assert repo.get(db, 123456) is None


def test_pages_newest_first(db: Connection) -> None:
    ids = [repo.create(db, title=f"note {i}").id for i in range(5)]
    first = repo.find(db, limit=2)
    assert [n.id for n in first] == ids[:-3:-1]
    second = repo.find(db, limit=2, after_id=first[-1].id)
    assert [n.id for n in second] == [ids[2], ids[1]]


def test_a_rolled_back_unit_of_work_leaves_nothing(db: Connection) -> None:
    def abandoned() -> None:
        with transaction(db):
            repo.create(db, title="draft")
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError):
        abandoned()
    assert repo.count(db) == 0


def test_bad_input_names_the_field(db: Connection) -> None:
    with pytest.raises(ValidationError) as e:
        repo.create(db, title="")
    assert "title" in e.value.errors


def test_delete(db: Connection) -> None:
    note = repo.create(db, title="gone soon")
    assert repo.delete(db, note.id) is True
    assert repo.delete(db, note.id) is False
