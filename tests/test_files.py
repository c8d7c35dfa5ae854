"""analysis_file_repo: CRUD, owner scoping, per-type totals, listings."""

from __future__ import annotations

from typing import Any

import pytest
from factories import analysis, file, user

from datalayer import IntegrityConflict, ValidationError
from datalayer import analysis_file_repo as repo

SHA = "a" * 64


def test_create_read_update_delete(db: Any) -> None:
    a = analysis(db, user(db))
    f = repo.create(db, analysis_id=a.id, filename="data.csv", file_type="csv", size_bytes=1024,
                    storage_uri="s3://bucket/data.csv", checksum=SHA.upper())
    assert f.checksum == SHA and f.size_bytes == 1024
    assert repo.get_by_id(db, f.id) == f
    g = repo.update(db, f.id, filename="renamed.csv", size_bytes=2048)
    assert g is not None and (g.filename, g.size_bytes, g.checksum) == ("renamed.csv", 2048, SHA)
    h = repo.update(db, f.id, checksum=None)
    assert h is not None and h.checksum is None and h.filename == "renamed.csv"
    assert repo.delete(db, f.id) and not repo.delete(db, f.id)
    assert repo.update(db, f.id, filename="x") is None


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"size_bytes": -1}, "size_bytes"),
    ({"size_bytes": 1.5}, "size_bytes"),
    ({"checksum": "abc"}, "checksum"),
    ({"filename": ""}, "filename"),
    ({"file_type": "x" * 51}, "file_type"),
    ({"storage_uri": "s3://\x00"}, "storage_uri"),
])
def test_bad_input(db: Any, kwargs: dict[str, Any], field: str) -> None:
    a = analysis(db, user(db))
    args: dict[str, Any] = {"analysis_id": a.id, "filename": "f", "file_type": "csv", "size_bytes": 1,
                            "storage_uri": "s3://b/f", **kwargs}
    with pytest.raises(ValidationError) as e:
        repo.create(db, **args)
    assert field in e.value.errors
    assert repo.list_for_analysis(db, a.id) == []


def test_missing_analysis(db: Any) -> None:
    with pytest.raises(IntegrityConflict) as e:
        repo.create(db, analysis_id=123456, filename="f", file_type="csv", size_bytes=1, storage_uri="s3://b/f")
    assert e.value.field == "analysis_id"


def test_by_type_and_totals(db: Any) -> None:
    a = analysis(db, user(db))
    csv1, png, csv2 = file(db, a, "csv", 100), file(db, a, "png", 7), file(db, a, "csv", 50)
    assert repo.list_for_analysis(db, a.id) == [csv1, png, csv2]
    assert repo.list_for_analysis(db, a.id, file_type="csv") == [csv1, csv2]
    totals = {t.file_type: (t.file_count, t.total_bytes) for t in repo.totals_by_type(db, a.id)}
    assert totals == {"csv": (2, 150), "png": (1, 7)}
    assert repo.totals_by_type(db, analysis(db, user(db)).id) == []


def test_owner_scoping(db: Any) -> None:
    ann, bob = user(db), user(db)
    a = analysis(db, ann)
    f = file(db, a)
    assert repo.get_for_user(db, ann.id, f.id) == f
    assert repo.get_for_user(db, bob.id, f.id) is None
    assert repo.list_for_analysis(db, a.id, user_id=bob.id) == []
    assert repo.list_for_analysis(db, a.id, user_id=ann.id) == [f]
    assert repo.delete(db, f.id, user_id=bob.id) is False
    assert repo.delete(db, f.id, user_id=ann.id) is True


def test_find_keyset(db: Any) -> None:
    a, b = analysis(db, user(db)), analysis(db, user(db))
    made = [file(db, a, "csv") for _ in range(3)] + [file(db, b, "png") for _ in range(2)]
    page = repo.find(db, limit=2)
    seen = list(page.items)
    while page.next_cursor:
        page = repo.find(db, limit=2, after=page.next_cursor)
        seen += page.items
    assert seen == made
    assert repo.find(db, analysis_id=b.id).items == made[3:]
    assert repo.find(db, file_type="png").items == made[3:]
    assert repo.find(db, filename_prefix="zzz").items == []
    assert repo.get_many(db, [made[4].id, made[0].id]) == [made[0], made[4]]
