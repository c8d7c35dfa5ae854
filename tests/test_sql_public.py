"""The public toolkit's SQL half: ``datalayer.sql`` loads a service's own files and runs its queries."""

from __future__ import annotations

import enum
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import attrs
import pytest

from datalayer import MultipleRowsFound, NotFound, QueryError, sql
from datalayer.pool import DataLayerConnection

NOTES_SQL = """\
-- name: create_table :exec
CREATE TABLE notes (id bigint PRIMARY KEY, title text NOT NULL, body text, tags text[] NOT NULL DEFAULT '{}',
                    meta jsonb NOT NULL DEFAULT '{}', kind text NOT NULL DEFAULT 'memo',
                    ref uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000007',
                    created_at timestamptz NOT NULL DEFAULT now())

-- name: add :exec
INSERT INTO notes (id, title, body, tags) VALUES (:id, :'title', :'body', :'tags')

-- name: get :maybe
SELECT id, title, body, tags, meta, kind, ref, created_at FROM notes WHERE id = :id

-- name: get_one :one
SELECT id, title, body, tags, meta, kind, ref, created_at FROM notes WHERE id = :id

-- name: every :many
SELECT id, title, body, tags, meta, kind, ref, created_at FROM notes ORDER BY id

-- name: count :scalar
SELECT count(*) FROM notes WHERE title LIKE :'pattern'

-- name: titles :many
SELECT title FROM notes ORDER BY id

-- name: bodies :many
SELECT id, body AS title, body, tags, meta, kind, ref, created_at FROM notes ORDER BY id

-- name: bad_tags :many
SELECT id, title, body, ARRAY[1, 2] AS tags, meta, kind, ref, created_at FROM notes ORDER BY id

-- name: load :copy
COPY notes (id, title) FROM STDIN
"""


class Kind(enum.Enum):
    MEMO = "memo"
    TODO = "todo"


@attrs.frozen
class Note:
    id: int
    title: str
    body: str | None
    tags: list[str]
    meta: dict[str, Any]
    kind: Kind
    ref: UUID
    created_at: datetime


@attrs.frozen(kw_only=True)
class KwNote:
    id: int
    title: str
    body: str | None = None
    tags: list[str] = attrs.field(factory=list)
    meta: dict[str, Any] = attrs.field(factory=dict)
    kind: str = "memo"
    ref: UUID | None = None
    created_at: datetime | None = None


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "notes"\n')
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.fixture
def notes(tmp_path: Path, db: DataLayerConnection) -> sql.QueryFile:
    root = _project(tmp_path, {"sql/notes.sql": NOTES_SQL})
    qf = sql.load(root / "sql" / "notes.sql")
    qf.bind("create_table").exec(db)
    add = qf.bind("add")
    add.exec(db, id=1, title="first", body=None, tags=["a", "b"])
    add.exec(db, id=2, title="second", body="text", tags=[])
    return qf


# ------------------------------------------------------------------------------------------- loading


def test_file_locations_relative_to_project_root(tmp_path: Path) -> None:
    root = _project(tmp_path, {"svc/sql/notes.sql": NOTES_SQL})
    qf = sql.load(root / "svc" / "sql" / "notes.sql")
    assert isinstance(qf, sql.QueryFile)
    assert qf.queries["get"].location == "svc/sql/notes.sql:10 notes.get"
    assert "get" in qf and "nope" not in qf


def test_folder_loads_every_file_and_names_each(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {
            "sql/a.sql": "-- name: one_a :scalar\nSELECT 1\n",
            "sql/b.sql": "-- name: one_b :scalar\nSELECT :x::int\n",
            "sql/notes.txt": "not sql",
        },
    )
    qf = sql.load(str(root / "sql"))
    assert sorted(qf.queries) == ["one_a", "one_b"]
    assert qf.queries["one_b"].location == "sql/b.sql:1 b.one_b"
    assert qf.location == "sql"


def test_duplicate_name_across_files_names_both(tmp_path: Path) -> None:
    root = _project(
        tmp_path, {"sql/a.sql": "-- name: get :scalar\nSELECT 1\n", "sql/b.sql": "\n-- name: get :scalar\nSELECT 2\n"}
    )
    with pytest.raises(QueryError) as e:
        sql.load(root / "sql")
    assert "sql/b.sql:2 b.get" in str(e.value) and "sql/a.sql:1 a.get" in str(e.value)


def test_missing_paths_and_empty_folder(tmp_path: Path) -> None:
    root = _project(tmp_path, {"sql/readme.txt": "nothing"})
    with pytest.raises(QueryError, match=r"sql/nope\.sql: no such file or folder"):
        sql.load(root / "sql" / "nope.sql")
    with pytest.raises(QueryError, match=r"^sql: the folder holds no \.sql file"):
        sql.load(root / "sql")
    with pytest.raises(QueryError, match=r"sql/readme\.txt: not a \.sql file"):
        sql.load(root / "sql" / "readme.txt")


def test_refused_sql_names_project_relative_line(tmp_path: Path) -> None:
    root = _project(tmp_path, {"db/q.sql": "-- name: q :many\nSELECT 1\nWHERE now() - interval :'w' < x\n"})
    with pytest.raises(QueryError, match=r"db/q\.sql:3 q\.q"):
        sql.load(root / "db" / "q.sql")


def test_builtin_files_are_named_sql_slash() -> None:
    from datalayer._paths import sql_dir

    users = sql.load(sql_dir() / "users.sql")
    assert users.queries["get_by_id"].location.startswith("sql/users.sql:")


def test_bind_of_missing_name_is_deferred_and_clear(tmp_path: Path, db: DataLayerConnection) -> None:
    root = _project(tmp_path, {"sql/notes.sql": NOTES_SQL})
    missing = sql.load(root / "sql" / "notes.sql").bind("gett", Note)
    binding = sql.bindings()[-1]
    assert binding.query is None and binding.name == "gett" and binding.module == __name__
    with pytest.raises(QueryError, match=r"sql/notes\.sql has no query named 'gett'"):
        missing.maybe(db, id=1)


# --------------------------------------------------------------------------------------- running


def test_every_cardinality(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    get = notes.bind("get", Note)
    first = get.maybe(db, id=1)
    assert first is not None
    assert (first.title, first.body, first.tags, first.meta) == ("first", None, ["a", "b"], {})
    assert first.kind is Kind.MEMO and first.ref == UUID(int=7) and first.created_at.tzinfo is not None
    assert get.maybe(db, id=99) is None
    assert notes.bind("get_one", Note).one(db, id=2).body == "text"
    with pytest.raises(NotFound, match="notes.get_one"):
        notes.bind("get_one", Note).one(db, id=99)
    assert [n.id for n in notes.bind("every", Note).many(db)] == [1, 2]
    assert notes.bind("count", int).scalar(db, pattern="%s%") == 2
    assert notes.bind("titles", str).many(db) == ["first", "second"]
    assert notes.bind("load").copy(db, [(3, "third"), (4, "fourth")]) == 2
    assert notes.bind("add").exec(db, id=5, title="fifth", body=None, tags=[]) == 1
    assert notes.bind("count", int).scalar(db, pattern="%") == 5
    with pytest.raises(QueryError, match=r"declared :maybe; call it with \.maybe\(\), not \.one\(\)"):
        get.one(db, id=1)
    with pytest.raises(MultipleRowsFound):
        sql.load(_maybe_many(notes)).bind("all_maybe", Note).maybe(db)


def _maybe_many(notes: sql.QueryFile) -> Path:
    path = notes.path.parent / "more.sql"
    path.write_text("-- name: all_maybe :maybe\nSELECT id, title, body, tags, meta, kind, ref, created_at FROM notes\n")
    return path


def test_kw_only_record(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    rows = notes.bind("every", KwNote).many(db)
    assert rows[0] == KwNote(
        id=1,
        title="first",
        body=None,
        tags=["a", "b"],
        meta={},
        kind="memo",
        ref=UUID(int=7),
        created_at=rows[0].created_at,
    )


def test_exact_parameters(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    add = notes.bind("add")
    args: dict[str, Any] = {"id": 9, "title": "t", "tags": []}
    with pytest.raises(QueryError) as e:
        add.exec(db, **args)
    msg = str(e.value)
    assert (
        "sql/notes.sql:7 notes.add" in msg
        and "missing body" in msg
        and "it takes exactly: id, title, body, tags" in msg
    )
    with pytest.raises(QueryError, match=r"extra owner, user_id; it takes exactly: id$"):
        notes.bind("get", Note).maybe(db, **{"id": 1, "owner": 2, "user_id": 3})
    with pytest.raises(QueryError, match=r"missing id; extra ident"):
        notes.bind("get", Note).maybe(db, ident=1)
    with pytest.raises(QueryError, match="it takes exactly: no parameters"):
        notes.bind("every", Note).many(db, id=1)
    assert notes.bind("count", int).scalar(db, pattern="x") == 0  # nothing was written by the refused calls


# --------------------------------------------------------------------------------------- strict records


@pytest.fixture
def strict() -> Iterator[None]:
    previous = sql.strict_records(True)
    try:
        yield
    finally:
        sql.strict_records(previous)


@pytest.mark.usefixtures("strict")
def test_strict_catches_none_in_non_optional_field(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    bodies = notes.bind("bodies", Note)
    with pytest.raises(QueryError) as e:
        bodies.many(db)
    msg = str(e.value)
    assert "sql/notes.sql:25 notes.bodies" in msg and "title" in msg and "None" in msg


@pytest.mark.usefixtures("strict")
def test_strict_catches_wrong_element_type(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    with pytest.raises(QueryError) as e:
        notes.bind("bad_tags", Note).many(db)
    assert "notes.bad_tags" in str(e.value) and "tags" in str(e.value) and "int" in str(e.value)


def test_strict_off_lets_the_mismatch_through(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    previous = sql.strict_records(False)
    try:
        assert sql.strict_records(False) is False
        assert notes.bind("bodies", Note).many(db)[0].title is None
    finally:
        sql.strict_records(previous)


def test_strict_is_off_by_default_outside_the_plugin() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from datalayer import sql; print(sql.strict_records(True), sql.strict_records(False))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["False", "True"]


def test_shims_keep_working(db: DataLayerConnection) -> None:
    from datalayer._run import Bound, bind
    from datalayer._sql import load_queries

    users = load_queries("users")
    get: Bound[Any] = bind(users, "get_by_id", dict)
    assert isinstance(get, sql.BoundQuery)
    assert sql.bindings()[-1].module == __name__
    assert "one" in sql.CARDINALITIES and "copy" in sql.CARDINALITIES


def test_pooled_connection_stays_clean(notes: sql.QueryFile, db: DataLayerConnection) -> None:
    db._dl_cursor = None  # the next query makes our kept cursor anew
    db._dl_dirty = False
    assert notes.bind("get", Note).maybe(db, id=1) is not None
    notes.bind("load").copy(db, [(11, "x")])
    assert db._dl_dirty is False  # our own cursors cost no session reset when it goes back


TYPING = Path(__file__).parent / "typing"


@pytest.mark.slow
def test_sample_types_pass_mypy_strict(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path),
            str(TYPING / "sql_sample.py"),
        ],
        cwd=TYPING.parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_sample_runs(db: DataLayerConnection) -> None:
    sys.path.insert(0, str(TYPING))
    try:
        import sql_sample
    finally:
        sys.path.remove(str(TYPING))
    maybe, one, many, total, changed, sent = sql_sample.run(db)
    assert maybe == sql_sample.Note(1, "first") and one == sql_sample.Note(2, "two")
    assert [n.id for n in many] == [1, 2] and (total, changed, sent) == (2, 1, 2)
    assert sql.bindings()[-1].module == "sql_sample"


# ------------------------------------------------------------------------------ rows that cannot be records

REVIEW_SQL = """\
-- name: pets :one
SELECT 1 AS id, (SELECT coalesce(json_agg(json_build_object('id', x.id, 'name', x.name)), '[]'::json)
                 FROM (VALUES (:'id'::jsonb, :'name'::jsonb)) AS x(id, name)) AS pets

-- name: mood :many
SELECT 1 AS id, :'mood' AS mood

-- name: swapped :maybe
SELECT 2 AS b, 1 AS a

-- name: three :one
SELECT 1 AS a, 2 AS b, 3 AS c

-- name: n :scalar
SELECT NULL::int

-- name: stamp :scalar
SELECT :'v'::json

-- name: put :exec
SELECT 1
"""


@attrs.frozen
class PetJ:
    id: int
    name: str


@attrs.frozen
class Owner:
    id: int
    pets: list[PetJ]


class Mood2(enum.Enum):
    CALM = "calm"


@attrs.frozen
class Moody:
    id: int
    mood: Mood2


@attrs.frozen
class AB:
    a: int
    b: int


@attrs.frozen
class Tagged:
    id: int
    tag: str


@attrs.frozen
class Holder:
    id: int
    pets: list[Tagged]


@pytest.fixture
def review(tmp_path: Path) -> sql.QueryFile:
    return sql.load(_project(tmp_path, {"sql/review.sql": REVIEW_SQL}) / "sql" / "review.sql")


@pytest.mark.parametrize(
    ("pet_id", "name", "problem"),
    [
        ("1.7", '"rex"', r"field pets\[0\]\.id: expected an integer, got a number"),
        ("true", '"rex"', r"field pets\[0\]\.id: expected an integer, got a boolean"),
        ('"3"', '"rex"', r"field pets\[0\]\.id: expected an integer, got a string"),
        ("1", "2", r"field pets\[0\]\.name: expected a string, got an integer"),
        ("null", '"rex"', r"field pets\[0\]\.id: expected an integer, got null"),
    ],
)
def test_json_in_records_is_not_coerced(
    review: sql.QueryFile, db: DataLayerConnection, pet_id: str, name: str, problem: str
) -> None:
    get = review.bind("pets", Owner)
    assert get.one(db, id="1", name='"rex"') == Owner(1, [PetJ(1, "rex")])
    with pytest.raises(
        QueryError, match=r"sql/review\.sql:1 review\.pets: row 1 cannot become a Owner: " + problem
    ) as e:
        get.one(db, id=pet_id, name=name)
    assert "rex" not in str(e.value) and "1.7" not in str(e.value)


def test_json_record_missing_key_and_not_an_object(review: sql.QueryFile, db: DataLayerConnection) -> None:
    with pytest.raises(QueryError, match=r"review\.pets: .*field pets\[0\]: the object has no key 'tag'"):
        review.bind("pets", Holder).one(db, id="1", name='"rex"')


def test_enum_value_the_enum_lacks_names_query_and_field(review: sql.QueryFile, db: DataLayerConnection) -> None:
    assert review.bind("mood", Moody).many(db, mood="calm") == [Moody(1, Mood2.CALM)]
    with pytest.raises(QueryError) as e:
        review.bind("mood", Moody).many(db, mood="happy")
    msg = str(e.value)
    assert "sql/review.sql:5 review.mood" in msg and "field mood" in msg and "Mood2" in msg and "str" in msg
    assert "happy" not in msg
    with pytest.raises(QueryError, match=r"review\.mood: row 1 cannot become a Mood2: column 1: not one of Mood2"):
        review.bind("mood", Mood2).many(db, mood="happy")


def test_columns_are_compared_with_fields_by_name(review: sql.QueryFile, db: DataLayerConnection) -> None:
    with pytest.raises(
        QueryError,
        match=r"review\.swapped: the result columns \(b, a\) are not the fields of AB \(a, b\): the same names in another order",
    ):
        review.bind("swapped", AB).maybe(db)
    with pytest.raises(
        QueryError, match=r"review\.three: the result columns \(a, b, c\) are not the fields of AB \(a, b\): extra c"
    ):
        review.bind("three", AB).one(db)

    @attrs.frozen
    class ABC:
        a: int
        c: int
        b: int = 0

    with pytest.raises(QueryError, match=r"are not the fields of .*ABC \(a, c, b\): the same names in another order"):
        review.bind("three", ABC).one(db)


def test_bind_refuses_what_is_not_a_record_or_column_type(review: sql.QueryFile) -> None:
    import dataclasses
    from typing import NamedTuple

    @dataclasses.dataclass
    class DC:
        a: int

    class NT(NamedTuple):
        a: int

    with pytest.raises(QueryError, match=r"review\.three: cannot bind to .*DC is a dataclass; make it an attrs class"):
        review.bind("three", DC)
    with pytest.raises(QueryError, match=r".*NT is a NamedTuple"):
        review.bind("three", NT)
    with pytest.raises(QueryError, match=r"cannot bind to it takes a type, got a int"):
        review.bind("n", 5)  # type: ignore[call-overload]
    with pytest.raises(QueryError, match=r"cannot bind to dict\[str, int\] \| list\[int\] is a union"):
        review.bind("n", dict[str, int] | list[int])  # type: ignore[arg-type]
    assert review.bind("n", dict[str, Any]).result == dict[str, Any]


@pytest.mark.usefixtures("strict")
def test_nullable_scalar_and_strict_wording(review: sql.QueryFile, db: DataLayerConnection) -> None:
    assert review.bind("n", int, nullable=True).scalar(db) is None
    assert review.bind("n", int | None).scalar(db) is None  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="COALESCE the column, or bind the query with nullable=True"):
        review.bind("n", int).scalar(db)
    with pytest.raises(QueryError) as e:
        review.bind("stamp", str).scalar(db, v="1")
    assert "bind the query to the type its first column holds" in str(e.value) and "COALESCE" not in str(e.value)
    with pytest.raises(QueryError, match="nullable=True is for a single value"):
        review.bind("three", AB, nullable=True)


def test_loader_small_things(tmp_path: Path, review: sql.QueryFile, db: DataLayerConnection) -> None:
    (tmp_path / "p").mkdir()
    root = _project(
        tmp_path / "p",
        {
            "sql/bom.sql": "\ufeff-- name: one :scalar\nSELECT 1\n",
            "more/empty.sql": "",
            "more/a.sql": "-- name: a :scalar\nSELECT 1\n",
        },
    )
    assert sql.load(root / "sql" / "bom.sql").bind("one", int).scalar(db) == 1
    with pytest.raises(QueryError, match=r"^more/empty\.sql: holds no '-- name:' query"):
        sql.load(root / "more")
    with pytest.raises(QueryError, match=r"^more/empty\.sql: holds no '-- name:' query"):
        sql.load(root / "more" / "empty.sql")
    assert repr(review.bind("nope", AB)) == "<BoundQuery sql/review.sql missing review.nope>"
    with pytest.raises(QueryError, match=r"declared :exec; call it with \.exec\(\), not \.copy\(\)"):
        review.bind("put").copy(db, id=1)  # type: ignore[arg-type]


def test_a_binding_nobody_holds_leaves_the_check(tmp_path: Path) -> None:
    # check reads bindings(): a query bound for a moment (a test, a script) must not be checked for ever
    f = tmp_path / "scratch.sql"
    f.write_text("-- name: one_row :scalar\nSELECT 1;\n")
    held = sql.load(f).bind("one_row", int)
    dropped = sql.load(f).bind("one_row", str)
    assert {b.result for b in sql.bindings() if b.domain == "scratch"} == {int, str}
    del dropped
    assert [b.result for b in sql.bindings() if b.domain == "scratch"] == [int]
    assert held.query.name == "one_row"


@pytest.mark.parametrize(("path", "says"), [("a\x00b.sql", "NUL"), (5, "takes a path")])
def test_load_refuses_what_cannot_be_a_path(path: object, says: str) -> None:
    with pytest.raises(QueryError, match=says):
        sql.load(path)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a-b", "get by id", "1st"])
def test_bind_refuses_a_name_no_header_can_spell(tmp_path: Path, name: str) -> None:
    f = tmp_path / "names.sql"
    f.write_text("-- name: ok :scalar\nSELECT 1;\n")
    with pytest.raises(QueryError, match="cannot be a query name"):
        sql.load(f).bind(name, int)
