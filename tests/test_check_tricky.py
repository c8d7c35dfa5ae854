"""Tricky queries that keep `datalayer check` honest: a finding for every false pass an outside review
found, none for every false refusal, and never a crash.

Each case binds one query to a record, runs the check on the real (migrated, cloned) database and
asserts the verdict; where the check passes a query, the query is also run, to show the record it builds
is what the check promised.
"""

from __future__ import annotations

import enum
import importlib
import sys
import typing
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from psycopg.types.range import Range

from datalayer import sql
from datalayer.contracts import Finding, check_contracts

FIXTURES = Path(__file__).parent / "fixtures" / "check"

SCHEMA = """
CREATE TYPE t_mood AS ENUM ('happy', 'sad');
CREATE DOMAIN t_email AS text NOT NULL;
CREATE TABLE t_items (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    note text,
    mood t_mood NOT NULL,
    span int4range NOT NULL,
    tags text[] NOT NULL,
    email t_email,
    doc jsonb NOT NULL,
    at timestamptz NOT NULL
);
CREATE TABLE t_parts (id bigint PRIMARY KEY, item_id bigint NOT NULL REFERENCES t_items, label text NOT NULL);
CREATE VIEW t_items_v AS SELECT i.id, i.name, i.note FROM t_items i;
INSERT INTO t_items VALUES
    (1, 'one', NULL, 'happy', '[1,5)', '{a,b}', 'a@example.com', '{"a": 1}', '2026-01-01T00:00:00Z'),
    (2, 'two', 'n', 'sad', '[2,3)', '{}', 'b@example.com', '{"a": 2}', 'infinity');
INSERT INTO t_parts VALUES (10, 1, 'p1'), (11, 1, 'p2');
"""


@pytest.fixture
def tdb(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    db.execute(SCHEMA)
    return db


@pytest.fixture
def verdict(tdb: psycopg.Connection[Any], tmp_path: Path) -> Any:
    """verdict(sql, Record) -> the check's findings for that query (call-site findings left out)."""
    counter = iter(range(1000))

    def run(text: str, result: type[Any], *, notes: bool = False, header: str = "") -> list[str]:
        path = tmp_path / f"q{next(counter)}.sql"
        path.write_text(f"-- name: q :many\n{header}{text}\n")
        bound = sql.load(path).bind("q", result)
        binding = [b for b in sql.bindings() if b.query is bound.query]
        found = check_contracts(tdb, binding, [], notes=notes)
        return [str(f) for f in found if "never called" not in f.message]

    return run


def _field(findings: list[str], name: str) -> str:
    hits = [f for f in findings if f"field {name!r}" in f]
    assert hits, f"no finding for field {name!r} in:\n" + "\n".join(findings)
    return hits[0]


@attrs.frozen
class NameCount:
    name: str
    n: int


@attrs.frozen
class Pair:
    a: str
    b: str


# ------------------------------------------------------------------------------ false passes: findings


@pytest.mark.parametrize(
    "grouping", ["ROLLUP (name)", "CUBE (name)", "GROUPING SETS ((name), ())", "ROLLUP (name, note)"]
)
def test_grouping_sets_make_grouping_columns_nullable(verdict: Any, grouping: str) -> None:
    f = _field(verdict(f"SELECT name, count(*) AS n FROM t_items GROUP BY {grouping}", NameCount), "name")
    assert "ROLLUP / CUBE / GROUPING SETS" in f
    assert verdict("SELECT name, count(*) AS n FROM t_items GROUP BY name", NameCount) == []


def test_cte_alias_list_renames_columns(verdict: Any) -> None:
    # c.a is t_items.note (nullable) although the CTE's select list calls it "name".
    f = verdict("WITH c(a, b) AS (SELECT note AS b, name AS a FROM t_items) SELECT a, b FROM c", Pair)
    assert len(f) == 1 and "field 'a'" in f[0] and "column note is nullable" in f[0]


def test_subquery_alias_list_renames_columns(verdict: Any) -> None:
    f = verdict("SELECT a, b FROM (SELECT note AS b, name AS a FROM t_items) AS s(a, b)", Pair)
    assert len(f) == 1 and "field 'a'" in f[0]
    f = verdict("SELECT a, b::text FROM t_items AS s(x, b, a)", Pair)  # a is note, b is name
    assert len(f) == 1 and "field 'a'" in f[0]


@attrs.frozen
class IdNoteExtra:
    id: int
    note: str
    extra: str


def test_star_in_the_select_list_does_not_shift_later_columns(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    tdb.execute("CREATE TABLE t_small (id bigint NOT NULL, note text)")
    f = verdict("SELECT *, 'x' AS extra FROM t_small", IdNoteExtra)
    assert len(f) == 1 and "field 'note'" in f[0]
    f = verdict("SELECT s.*, 'x' AS extra FROM t_small s", IdNoteExtra)
    assert len(f) == 1 and "field 'note'" in f[0]


@attrs.frozen
class Value:
    v: Any


@attrs.frozen
class Text:
    v: str


@attrs.frozen
class Int:
    v: int


@attrs.frozen
class Json:
    v: dict[str, Any]


@attrs.frozen
class Num:
    v: Decimal


@attrs.frozen
class Float:
    v: float


@pytest.mark.parametrize(
    ("expression", "record", "returns_null"),
    [
        ("array_length(tags, 1)", Int, True),  # the empty array of row 2
        ("substring(name from 'x+')", Text, True),  # no match
        ("to_char(at, 'YYYY')", Text, True),  # infinity
        ("extract(day from at)", Num, True),  # infinity
        ("date_part('day', at)", Float, True),
        ("array_upper(tags, 1)", Int, True),
        ("current_schema()", Text, False),
        ("current_schema", Text, False),
        ("nullif(name, 'one')", Text, True),
        ("doc -> 'missing'", Json, True),
        ("tags[5]", Text, True),
        ("(SELECT p.label FROM t_parts p WHERE p.item_id = t_items.id LIMIT 1)", Text, True),
        ("max(name) OVER (ROWS BETWEEN 1 FOLLOWING AND 1 FOLLOWING)", Text, True),
        ("my_unknown(name)", Text, False),
        ("(SELECT 'x' FROM t_parts p WHERE p.item_id = t_items.id LIMIT 1)", Text, True),  # no row for item 2
        ("(SELECT 1 FROM t_parts)", Int, False),  # not one row: a constant is no aggregate
        ("(SELECT max(label) FROM t_parts p WHERE p.item_id = t_items.id)", Text, True),
    ],
)
def test_functions_that_return_null_for_non_null_input(
    verdict: Any, tdb: psycopg.Connection[Any], expression: str, record: type[Any], returns_null: bool
) -> None:
    tdb.execute("CREATE FUNCTION my_unknown(text) RETURNS text LANGUAGE sql AS 'SELECT NULL::text'")
    text = f"SELECT {expression} AS v FROM t_items ORDER BY id"
    f = verdict(text, record)
    assert len(f) == 1 and "field 'v'" in f[0] and "may be NULL" in f[0], f
    if returns_null:  # the check is right: PostgreSQL does return NULL here
        values = [r[0] for r in tdb.execute(text).fetchall()]
        assert None in values


def test_jsonb_match_operator_may_be_null(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    @attrs.frozen
    class Flag:
        v: bool

    f = verdict("SELECT doc @@ '$.a' AS v FROM t_items", Flag)
    assert len(f) == 1 and "@@" in f[0]
    assert tdb.execute("SELECT '{\"a\": 1}'::jsonb @@ '$.a'").fetchone() == (None,)
    # Text search's @@ is strict: no finding.
    assert verdict("SELECT to_tsvector('simple', name) @@ to_tsquery('simple', 'one') AS v FROM t_items", Flag) == []


def test_not_null_not_valid_constraint(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    if tdb.info.server_version < 180000:
        pytest.skip("NOT NULL … NOT VALID constraints exist from PostgreSQL 18")
    tdb.execute("ALTER TABLE t_items ADD CONSTRAINT t_items_note_nn NOT NULL note NOT VALID")
    f = verdict("SELECT note AS v FROM t_items", Text)
    assert len(f) == 1 and "NOT VALID" in f[0]


@attrs.frozen
class IdNotes:
    id: int
    notes: list[str]


@attrs.frozen
class IdMaybeNotes:
    id: int
    notes: list[str | None]


def test_array_elements(verdict: Any) -> None:
    text = "SELECT id, array_agg(note) AS notes FROM t_items GROUP BY id"
    f = verdict(text, IdNotes)
    assert len(f) == 1 and "array elements may be NULL" in f[0] and "list[str | None]" in f[0]
    assert verdict(text, IdMaybeNotes) == []
    assert verdict("SELECT id, array_agg(name) AS notes FROM t_items GROUP BY id", IdNotes) == []
    assert len(verdict("SELECT id, ARRAY[name, note] AS notes FROM t_items", IdNotes)) == 1
    assert len(verdict("SELECT id, tags AS notes FROM t_items", IdNotes)) == 1  # a column's elements


@attrs.frozen
class KwOnly:
    a: int
    b: str = attrs.field(kw_only=True)
    c: int


def test_kw_only_fields_are_compared_in_the_row_makers_order(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    assert verdict("SELECT 1 AS a, 'x' AS b, 2 AS c", KwOnly) == []
    path_ok = sql.load(_write(tdb, "SELECT 1 AS a, 'x' AS b, 2 AS c")).bind("q", KwOnly)
    assert path_ok.one(tdb) == KwOnly(1, 2, b="x")
    f = verdict("SELECT 1 AS a, 2 AS c, 'x' AS b", KwOnly)
    assert len(f) == 1 and "order differs" in f[0]


def _write(tdb: psycopg.Connection[Any], text: str, card: str = "one") -> Path:
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dl-check-"))
    path = folder / "run.sql"
    path.write_text(f"-- name: q :{card}\n{text}\n")
    return path


@attrs.frozen
class Part:
    id: int
    label: str


@attrs.frozen
class PartWithExtra:
    id: int
    label: str
    extra: str


@attrs.frozen
class WithParts:
    id: int
    parts: list[Part]


@attrs.frozen
class WithExtraParts:
    id: int
    parts: list[PartWithExtra]


def test_json_shaped_into_nested_records(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    agg = "coalesce((SELECT json_agg(p ORDER BY p.id) FROM t_parts p WHERE p.item_id = i.id), '[]'::json)"
    assert verdict(f"SELECT i.id, {agg} AS parts FROM t_items i", WithParts) == []
    f = verdict(f"SELECT i.id, {agg} AS parts FROM t_items i", WithExtraParts)
    assert len(f) == 1 and "parts[].extra" in f[0] and "no key 'extra'" in f[0]
    built = (
        "coalesce((SELECT json_agg(json_build_object('id', p.id, 'label', i.note)) FROM t_parts p "
        "WHERE p.item_id = i.id), '[]')"
    )
    f = verdict(f"SELECT i.id, {built} AS parts FROM t_items i", WithParts)
    assert len(f) == 1 and "parts[].label" in f[0] and "may be NULL" in f[0]
    # json check cannot read: a note, not a failure.
    assert verdict("SELECT id, doc AS parts FROM t_items i", WithParts) == []
    notes = verdict("SELECT id, doc AS parts FROM t_items i", WithParts, notes=True)
    assert len(notes) == 1 and "note: unverifiable" in notes[0]
    # Without the coalesce the aggregate is NULL for an item without parts.
    f = verdict(
        "SELECT i.id, (SELECT json_agg(p) FROM t_parts p WHERE p.item_id = i.id) AS parts FROM t_items i", WithParts
    )
    assert len(f) == 1 and "field 'parts'" in f[0]


def test_annotation_naming_a_missing_column(verdict: Any) -> None:
    f = verdict("SELECT name AS v FROM t_items", Text, header="-- not-null: nmae: typo\n")
    assert len(f) == 1 and "names 'nmae', which the query does not return" in f[0]


# --------------------------------------------------------------------------- call sites in any module


@pytest.fixture
def call_findings(tdb: psycopg.Connection[Any]) -> list[Finding]:
    sys.path.insert(0, str(FIXTURES))
    try:
        repo = importlib.import_module("checkcalls.repo")
        other = importlib.import_module("checkcalls.other")
    finally:
        sys.path.remove(str(FIXTURES))
    bound = [b for b in sql.bindings() if b.module == repo.__name__]
    queries = list(sql.load(FIXTURES / "checkcalls" / "calls.sql").queries.values())
    return check_contracts(tdb, bound, queries, modules=[other], notes=True)


def _about(findings: list[Finding], name: str) -> list[str]:
    return [str(f) for f in findings if f" calls.{name}" in f.location]


def test_direct_calls(call_findings: list[Finding]) -> None:
    assert _about(call_findings, "get") == []
    (f,) = _about(call_findings, "find")
    assert "missing parameter(s) :after" in f and "repo.py:" in f


def test_calls_through_aliases(call_findings: list[Finding]) -> None:
    (f,) = _about(call_findings, "by_alias")
    assert "declared :many but called with .one()" in f
    hits = _about(call_findings, "local_alias")
    assert any("afterr passed but not used" in f for f in hits), hits
    assert any("missing parameter(s) :after" in f for f in hits), hits
    assert any("missing parameter(s) :before" in f for f in _about(call_findings, "choice_b"))
    assert [f for f in _about(call_findings, "choice_a") if "note" not in f] == []


def test_calls_from_another_module(call_findings: list[Finding]) -> None:
    hits = _about(call_findings, "from_other")
    assert any("extra passed but not used" in f and "other.py:" in f for f in hits), hits
    assert any("declared :maybe but called with .one()" in f and "other.py:" in f for f in hits), hits


def test_unverifiable_calls_are_notes(call_findings: list[Finding]) -> None:
    for name, why in [
        ("by_partial", "functools.partial"),
        ("by_helper", "handed to _helper()"),
        ("by_splat", "**kwargs"),
        ("stored", "bound without a name of its own"),
    ]:
        notes = [f for f in call_findings if f" calls.{name}" in f.location and f.note]
        assert any(why in f.message for f in notes), (name, [str(f) for f in call_findings])
    errors = [str(f) for f in call_findings if " calls.by_splat" in f.location and not f.note]
    assert len(errors) == 1 and "unknown passed but not used" in errors[0]
    assert not [f for f in call_findings if "never called" in f.message]


# -------------------------------------------------------------------------- false refusals: no finding


@attrs.frozen
class NName:
    n: int
    name: str


def test_recursive_cte_with_qualified_self_references(verdict: Any) -> None:
    text = (
        "WITH RECURSIVE c(n, name) AS (SELECT 1, 'a'::text UNION ALL SELECT c.n + 1, c.name || 'a' FROM c "
        "WHERE c.n < 3) SELECT c.n, c.name FROM c"
    )
    assert verdict(text, NName) == []
    nullable = text.replace("c.name || 'a'", "NULL::text")
    f = verdict(nullable, NName)
    assert len(f) == 1 and "field 'name'" in f[0]
    # Self-reference inside a nested subquery of the recursive branch.
    deep = (
        "WITH RECURSIVE c(n, name) AS (SELECT 1, 'a'::text UNION ALL SELECT s.n + 1, s.name FROM "
        "(SELECT c.n, c.name FROM c WHERE c.n < 3) s) SELECT c.n, c.name FROM c"
    )
    assert verdict(deep, NName) == []


def test_deep_nesting_never_crashes(verdict: Any) -> None:
    text = "SELECT " + "coalesce(" * 150 + "name" + ", name)" * 150 + " AS v FROM t_items"
    f = verdict(text, Text)
    assert len(f) == 1 and "nests too deeply" in f[0]


class Mood(enum.StrEnum):
    HAPPY = "happy"
    SAD = "sad"


@attrs.frozen
class MoodStr:
    mood: str
    span: Range[int]


@attrs.frozen
class MoodEnum:
    mood: Mood
    span: Any


def test_enum_and_range_columns(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    assert verdict("SELECT mood, span FROM t_items", MoodStr) == []
    assert verdict("SELECT mood, span FROM t_items", MoodEnum) == []
    rows = sql.load(_write(tdb, "SELECT mood, span FROM t_items ORDER BY id", "many")).bind("q", MoodEnum).many(tdb)
    assert rows[0].mood is Mood.HAPPY and rows[0].span == Range(1, 5)


@attrs.frozen
class IdName:
    id: int
    name: str


@attrs.frozen
class IdNameNote:
    id: int
    name: str
    note: str | None


def test_views_and_select_star(verdict: Any) -> None:
    assert verdict("SELECT id, name FROM t_items_v", IdName) == []
    assert verdict("SELECT * FROM t_items_v", IdNameNote) == []
    f = verdict("SELECT id, note AS name FROM t_items_v", IdName)
    assert len(f) == 1 and "field 'name'" in f[0]
    assert verdict("SELECT v.* FROM t_items_v v JOIN t_parts p ON p.item_id = v.id", IdNameNote) == []
    f = verdict("SELECT v.* FROM t_parts p LEFT JOIN t_items_v v ON p.item_id = v.id", IdNameNote)
    assert len(f) == 2  # id and name: the nullable side of an outer join


@attrs.frozen
class Flag:
    v: bool


@pytest.mark.parametrize(
    ("expression", "record"),
    [
        ("name LIKE 'o%'", Flag),
        ("name ILIKE 'O%'", Flag),
        ("name IN ('one', 'two')", Flag),
        ("id BETWEEN 1 AND 2", Flag),
        ("id NOT BETWEEN SYMMETRIC 1 AND 2", Flag),
        ("id = ANY(ARRAY[1, 2])", Flag),
        ("id IN (SELECT item_id FROM t_parts)", Flag),
        ("EXISTS (SELECT FROM t_parts)", Flag),
        ("note IS DISTINCT FROM name", Flag),
        ("concat(name, note)", Text),
        ("concat_ws(',', name, note)", Text),
        ("lower(name) || upper(name)", Text),
        ("coalesce(note, name)", Text),
        ("greatest(note, name)", Text),
        ("email", Text),  # a NOT NULL domain
        ("CASE WHEN id > 1 THEN name ELSE 'none' END", Text),
        ("(SELECT count(*) FROM t_parts p WHERE p.item_id = i.id)", Int),
        ("row_number() OVER (ORDER BY id)", Int),
        ("cardinality(tags)", Int),
        ("jsonb_build_object('a', note)", Value),
        ("row_to_json(i)", Value),
        ("to_jsonb(i.*)", Value),
        ("ARRAY(SELECT label FROM t_parts p WHERE p.item_id = i.id)", Value),
    ],
)
def test_non_null_expressions(verdict: Any, tdb: psycopg.Connection[Any], expression: str, record: type[Any]) -> None:
    text = f"SELECT {expression} AS v FROM t_items i"
    if record is Value:

        @attrs.frozen
        class NotNullAny:
            v: dict[str, Any] | list[str]

        record = NotNullAny
    assert verdict(text, record) == []
    values = [r[0] for r in tdb.execute(text).fetchall()]
    assert None not in values


@attrs.frozen
class Labels:
    v: list[str]


def test_array_subquery_elements(verdict: Any) -> None:
    assert verdict("SELECT ARRAY(SELECT label FROM t_parts p WHERE p.item_id = i.id) AS v FROM t_items i", Labels) == []
    f = verdict("SELECT ARRAY(SELECT note FROM t_items) AS v FROM t_items i", Labels)
    assert len(f) == 1 and "array elements may be NULL" in f[0]


def test_two_not_null_lines_add_up(verdict: Any) -> None:
    header = "-- not-null: a: a note is set whenever asked for\n-- not-null: b: the same\n"
    text = "SELECT note AS a, note AS b FROM t_items"
    assert verdict(text, Pair, header=header) == []
    one = verdict(text, Pair, header="-- not-null: b: the same\n")
    assert len(one) == 1 and "field 'a'" in one[0]


@attrs.frozen
class IdLabel:
    id: int
    label: str


def test_join_using_columns(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    tdb.execute("CREATE TABLE t_a (k bigint, a text NOT NULL); CREATE TABLE t_b (k bigint, b text NOT NULL)")

    @attrs.frozen
    class K:
        k: int

    # Equal on both sides of an inner join, so neither is NULL, although both columns are nullable.
    assert verdict("SELECT k FROM t_a JOIN t_b USING (k)", K) == []
    assert verdict("SELECT k FROM t_a NATURAL JOIN t_b", K) == []
    assert len(verdict("SELECT k FROM t_a LEFT JOIN t_b USING (k)", K)) == 1  # t_a.k, nullable
    assert len(verdict("SELECT k FROM t_a FULL JOIN t_b USING (k)", K)) == 1
    # Under the nullable side of an outer join the merged column is NULL-extended.
    f = verdict(
        "SELECT x.k FROM t_items i LEFT JOIN (t_a JOIN t_b USING (k)) ON true CROSS JOIN (SELECT k FROM t_a) x", K
    )
    assert len(f) == 1


def test_where_proves_columns_not_null(verdict: Any) -> None:
    @attrs.frozen
    class V:
        v: str

    assert verdict("SELECT note AS v FROM t_items WHERE note IS NOT NULL", V) == []
    assert verdict("SELECT i.note AS v FROM t_items i WHERE note LIKE 'n%' AND id > 0", V) == []
    assert (
        verdict("SELECT p.label AS v FROM t_items i LEFT JOIN t_parts p ON p.item_id = i.id WHERE p.label <> 'x'", V)
        == []
    )
    assert verdict("SELECT i.note AS v FROM t_parts p JOIN t_items i ON i.note = p.label", V) == []
    # An OR, a negation or an outer join's ON proves nothing.
    assert len(verdict("SELECT note AS v FROM t_items WHERE note IS NOT NULL OR id > 0", V)) == 1
    assert len(verdict("SELECT note AS v FROM t_items WHERE NOT (note IS NULL AND id > 5)", V)) == 1
    f = verdict("SELECT i.note AS v FROM t_parts p LEFT JOIN t_items i ON i.note = p.label", V)
    assert len(f) == 1
    # A WHERE of a subquery proves nothing about the outer query's own columns of the same name.
    assert len(verdict("SELECT note AS v FROM t_items WHERE id IN (SELECT id FROM t_items WHERE note = 'n')", V)) == 1


@attrs.frozen
class NumName:
    n: int
    name: str


def test_values_union_and_returning(verdict: Any) -> None:
    assert verdict("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, name)", NumName) == []
    f = verdict("SELECT * FROM (VALUES (1, 'a'), (2, NULL)) AS v(n, name)", NumName)
    assert len(f) == 1 and "field 'name'" in f[0]
    assert verdict("SELECT 1 AS n, name FROM t_items UNION ALL SELECT 2, name FROM t_items", NumName) == []
    f = verdict("SELECT 1 AS n, name FROM t_items UNION SELECT 2, note FROM t_items", NumName)
    assert len(f) == 1 and "field 'name'" in f[0]
    assert verdict("SELECT 1 AS n, name FROM t_items EXCEPT SELECT 2, note FROM t_items", NumName) == []
    text = "INSERT INTO t_parts (id, item_id, label) VALUES (99, 1, 'x') RETURNING id AS n, label AS name"
    assert verdict(text, NumName) == []


def test_json_column_into_a_scalar_type_is_a_type_finding(verdict: Any) -> None:
    f = verdict("SELECT doc AS v FROM t_items", Text)
    assert len(f) == 1 and "column is jsonb but the field is str" in f[0]


# ------------------------------------------------------------------- second review: every binding, types


@pytest.fixture
def multi(tdb: psycopg.Connection[Any]) -> Any:
    tdb.execute("CREATE TABLE t_orders (id bigint PRIMARY KEY, name text NOT NULL, nick text NOT NULL)")
    sys.path.insert(0, str(FIXTURES))
    try:
        repo = importlib.import_module("checkmulti.repo")
        other = importlib.import_module("checkmulti.other")
    finally:
        sys.path.remove(str(FIXTURES))

    def run(*modules: Any) -> list[str]:
        names = {m.__name__ for m in modules}
        bound = [b for b in sql.bindings() if b.module in names]
        return [str(f) for f in check_contracts(tdb, bound, [], modules=modules)]

    return run, repo, other


def test_every_binding_of_a_query_is_checked(multi: Any) -> None:
    run, repo, other = multi
    assert run(repo) == []
    both = run(repo, other)
    assert len(both) == 3, both
    assert any("bound to IdAsText" in f and "column is int8 but the field is str" in f for f in both), both
    assert any("bound to Swapped" in f and "order differs" in f for f in both), both
    assert any("bound to Reordered" in f and "order differs" in f for f in both), both
    assert len(run(other)) == 3


def test_lower_and_upper_of_a_range_may_be_null(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    tdb.execute("INSERT INTO t_items VALUES (3, 'three', NULL, 'sad', 'empty', '{}', 'c@x.org', '{}', now())")
    for fn in ("lower", "upper"):
        f = verdict(f"SELECT {fn}(span) AS v FROM t_items", Int)
        assert len(f) == 1 and "range is empty or unbounded" in f[0], f
        assert None in [r[0] for r in tdb.execute(f"SELECT {fn}(span) FROM t_items")]
        assert verdict(f"SELECT {fn}(name) AS v FROM t_items", Text) == []
        assert verdict(f"SELECT {fn}(name::text) AS v FROM t_items", Text) == []
    # An argument check cannot type (a subquery's column) may be a range: a finding, not a pass.
    assert len(verdict("SELECT lower(s.x) AS v FROM (SELECT span AS x FROM t_items) s", Int)) == 1


def test_row_comparisons_are_null_when_a_member_is(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    for text in ("ROW(name, note) = ROW('one', 'x')", "(name, note) < ('a', 'b')", "(id, note) IN ((1, 'x'))"):
        f = verdict(f"SELECT {text} AS v FROM t_items", Flag)
        assert len(f) == 1 and "column note is nullable" in f[0], (text, f)
    assert None in [r[0] for r in tdb.execute("SELECT ROW(name, note) = ROW('one', 'x') FROM t_items")]
    assert verdict("SELECT ROW(id, name) = ROW(1, 'one') AS v FROM t_items", Flag) == []


class PartMood(enum.StrEnum):
    HAPPY = "happy"


@attrs.frozen
class MoodPart:
    mood: PartMood


@attrs.frozen
class MoodLiteral:
    mood: typing.Literal["sad"]


@attrs.frozen
class MoodFullLiteral:
    mood: typing.Literal["happy", "sad"]


def test_enum_labels_the_python_type_lacks(verdict: Any) -> None:
    f = verdict("SELECT mood FROM t_items", MoodPart)
    assert len(f) == 1 and "'sad'" in f[0] and "lacks" in f[0], f
    f = verdict("SELECT mood FROM t_items", MoodLiteral)
    assert len(f) == 1 and "'happy'" in f[0], f
    assert verdict("SELECT mood FROM t_items", MoodFullLiteral) == []


def test_where_proves_an_outer_joined_column(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    tdb.execute("CREATE TABLE t_pets (id bigint PRIMARY KEY, owner bigint NOT NULL, name text NOT NULL, nick text)")

    @attrs.frozen
    class IdPet:
        id: int
        pet: int

    @attrs.frozen
    class IdPetName:
        id: int
        pet: int
        pet_name: str

    text = "SELECT i.id, x.id AS pet FROM t_items i LEFT JOIN t_pets x ON x.owner = i.id WHERE x.id IS NOT NULL"
    assert verdict(text, IdPet) == []
    # x.id is not NULL, so x's row was matched (a NULL-extended row is NULL everywhere): x.name is NOT NULL
    # in the table, x.nick stays nullable.
    assert verdict(text.replace("x.id AS pet", "x.id AS pet, x.name AS pet_name"), IdPetName) == []
    f = verdict(text.replace("x.id AS pet", "x.id AS pet, x.nick AS pet_name"), IdPetName)
    assert len(f) == 1 and "field 'pet_name'" in f[0] and "column nick is nullable" in f[0], f
    f = verdict(text.replace("WHERE x.id IS NOT NULL", "WHERE i.id IS NOT NULL"), IdPet)
    assert len(f) == 1 and "nullable side of an outer join" in f[0], f


def test_lead_and_lag_with_a_default(verdict: Any, tdb: psycopg.Connection[Any]) -> None:
    for fn in ("lead", "lag"):
        text = f"SELECT {fn}(id, 1, 0::bigint) OVER (ORDER BY id) AS v FROM t_items"
        assert verdict(text, Int) == []
        assert None not in [r[0] for r in tdb.execute(text)]
        assert len(verdict(f"SELECT {fn}(id, 1) OVER (ORDER BY id) AS v FROM t_items", Int)) == 1
        assert len(verdict(f"SELECT {fn}(id, 1, NULL::bigint) OVER (ORDER BY id) AS v FROM t_items", Int)) == 1
        assert len(verdict(f"SELECT {fn}(note, 1, 'x') OVER (ORDER BY id) AS v FROM t_items", Text)) == 1


def test_getattr_on_a_module_of_bound_queries(tdb: psycopg.Connection[Any]) -> None:
    sys.path.insert(0, str(FIXTURES))
    try:
        repo = importlib.import_module("checkcalls.repo")
        dynamic = importlib.import_module("checkcalls.dynamic")
    finally:
        sys.path.remove(str(FIXTURES))
    bound = [b for b in sql.bindings() if b.module == repo.__name__]
    found = check_contracts(tdb, bound, [], modules=[dynamic], notes=True)
    hits = _about(found, "by_getattr")
    assert any("zzz passed but not used" in f and "dynamic.py:" in f for f in hits), hits
    assert any("missing parameter(s) :user_id" in f for f in hits), hits
    # A computed name may reach any bound query of the module: a note on each.
    for name in ("by_getattr_name", "get", "find"):
        notes = [f.message for f in found if f" calls.{name}" in f.location and f.note]
        assert any("getattr(repo, which)" in m for m in notes), (name, notes)
        assert any("vars(repo)" in m for m in notes), (name, notes)


@attrs.frozen
class IntMap:
    v: dict[str, int]


@attrs.frozen
class StrList:
    v: list[str]


def test_json_values_against_dict_and_list_types(verdict: Any) -> None:
    f = verdict("SELECT json_build_object('a', name) AS v FROM t_items", IntMap)
    assert len(f) == 1 and "v.a: the json value is text but the field is int" in f[0], f
    assert verdict("SELECT json_build_object('a', id) AS v FROM t_items", IntMap) == []
    f = verdict("SELECT json_build_array(id, note) AS v FROM t_items", StrList)
    assert len(f) == 2 and any("an element may be NULL" in x for x in f), f
    assert any("v[]: the json value is int8 but the field is str" in x for x in f), f
    assert verdict("SELECT json_build_array(name, 'x') AS v FROM t_items", StrList) == []
    f = verdict("SELECT json_agg(id) AS v FROM t_items GROUP BY name", StrList)
    assert len(f) == 1 and "int8" in f[0], f
    # A json column's contents are unknown to check: a note, not a silent pass.
    for record in (IntMap, StrList):
        notes = verdict("SELECT doc AS v FROM t_items", record, notes=True)
        assert len(notes) == 1 and "note: unverifiable" in notes[0], notes
        assert verdict("SELECT doc AS v FROM t_items", record) == []


@attrs.frozen
class Typed:
    n: int


@attrs.frozen
class TypedText:
    n: str


@attrs.frozen
class TypedWhen:
    n: datetime


@attrs.frozen
class HasTyped:
    v: Typed


@attrs.frozen
class HasTypedText:
    v: TypedText


@attrs.frozen
class HasTypedWhen:
    v: TypedWhen


@attrs.frozen
class NameAsInt:
    id: int
    name: int


@attrs.frozen
class Agg:
    v: list[NameAsInt] | None


_HOLDERS: dict[type[Any], type[Any]] = {Typed: HasTyped, TypedText: HasTypedText, TypedWhen: HasTypedWhen}


def test_nested_record_keys_against_field_types(verdict: Any) -> None:
    def one(value: str, record: type[Any]) -> list[str]:
        return verdict(f"SELECT json_build_object('n', {value}) AS v FROM t_items", _HOLDERS[record])

    for value, record, sql_type in [
        ("1.7", Typed, "numeric"),
        ("true", Typed, "bool"),
        ("id", TypedText, "int8"),
        ("name", Typed, "text"),
        ("name", TypedWhen, "text"),
    ]:
        f = one(value, record)
        assert len(f) == 1 and f"v.n: the json value is {sql_type}" in f[0], (value, f)
    assert one("id", Typed) == [] and one("name", TypedText) == [] and one("at", TypedWhen) == []
    # json_agg of table rows: each column's type against its field.
    text = "SELECT json_agg(i) AS v FROM t_items i WHERE false"
    f = verdict(text, Agg)
    assert len(f) == 1 and "v[].name: the json value is text but the field is int" in f[0], f
