"""The SQL loader: psql-style parameters, what it leaves alone, what it refuses, and where."""

from __future__ import annotations

import pytest

from datalayer import QueryError
from datalayer._paths import sql_dir
from datalayer._sql import load_queries, parse_sql


def one(text: str):  # type: ignore[no-untyped-def]
    (q,) = parse_sql(text, domain="t", file="sql/t.sql").values()
    return q


def test_parameters_both_forms() -> None:
    q = one("-- name: q :many\nSELECT * FROM t WHERE a = :a AND b = :'b' AND c = :a\n")
    assert q.sql == "SELECT * FROM t WHERE a = %(a)s AND b = %(b)s AND c = %(a)s"
    assert q.params == ("a", "b")
    assert q.text.endswith("c = :a")


def test_casts_strings_comments_dollar_quotes_left_alone() -> None:
    q = one(
        "-- name: q :many\n"
        "SELECT x::int, ':not_a_param', E'it\\'s :no', \"col:x\", $$ :nope $$, $t$ :nope $t$, "
        "arr[1:2] -- :comment\n /* :block /* nested :x */ */ FROM t WHERE y = :y::text\n"
    )
    assert q.params == ("y",)
    assert "%(y)s::text" in q.sql and "x::int" in q.sql and "':not_a_param'" in q.sql
    assert "$$ :nope $$" in q.sql and "arr[1:2]" in q.sql


def test_percent_is_doubled() -> None:
    q = one("-- name: q :many\nSELECT 5 % 2, 'a%b' FROM t WHERE name LIKE :'p' || '%'\n")
    assert q.sql == "SELECT 5 %% 2, 'a%%b' FROM t WHERE name LIKE %(p)s || '%%'"


def test_header_doc_and_lines() -> None:
    text = "-- file comment\n\n-- name: first :one\n-- The doc.\n-- not-null: total\nSELECT 1;\n\n-- name: second :exec\nDELETE FROM t\n"
    qs = parse_sql(text, domain="t", file="sql/t.sql")
    assert qs["first"].line == 3 and qs["first"].sql_line == 6 and qs["first"].doc == "The doc."
    assert qs["first"].annotations == {"not-null": "total"}
    assert qs["second"].line == 8 and qs["second"].cardinality == "exec"
    assert qs["first"].location == "sql/t.sql:3 t.first"


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("-- name: q :exec\nCREATE TABLE x (a int DEFAULT :d)\n", "cannot bind parameters in a CREATE", 1),
        ("-- name: q :exec\nSET statement_timeout = :t\n", "SET", 1),
        ("-- name: q :copy\nCOPY t FROM STDIN WITH (DELIMITER :'d')\n", "COPY", 1),
        ("-- name: q :many\nSELECT 1\nWHERE now() - interval :'w' < x\n", "write :'w'::interval", 3),
        ('-- name: q :many\nSELECT * FROM :"tbl"\n', "identifier", 2),
        ("-- name: q :many\nSELECT 1;\nSELECT 2\n", "more than one statement", 3),
        ("-- name: q :sometimes\nSELECT 1\n", "cardinality", 1),
        ("-- name: q :many\n-- only comments\n", "no SQL", 1),
        ("-- name: q :many\nSELECT 'unterminated\n", "unterminated", 2),
        ("-- name: q :many\nCOPY t FROM STDIN\n", ":copy", 1),
        ("SELECT 1\n-- name: q :many\nSELECT 2\n", "before the first", None),
    ],
)
def test_refusals_name_file_and_line(text: str, needle: str, line: int | None) -> None:
    with pytest.raises(QueryError) as e:
        parse_sql(text, domain="t", file="sql/t.sql")
    assert needle in str(e.value)
    assert "sql/t.sql" in str(e.value)
    if line is not None:
        assert f"sql/t.sql:{line} t.q" in str(e.value)


def test_duplicate_names_refused() -> None:
    with pytest.raises(QueryError, match="duplicate"):
        parse_sql("-- name: q :many\nSELECT 1\n-- name: q :many\nSELECT 2\n", domain="t", file="sql/t.sql")


def test_location_of_server_error_position() -> None:
    q = one("-- name: q :many\nSELECT a,\n  :'p' AS p,\n  bad\nFROM t\n")
    server_sql = "SELECT a,\n  $1 AS p,\n  bad\nFROM t"
    assert q.location_at(server_sql.index("bad") + 1) == "sql/t.sql:4 t.q"
    assert q.location_at(None) == "sql/t.sql:1 t.q"


def test_read_only_detection() -> None:
    assert one("-- name: q :many\nSELECT 1\n").read_only
    assert one("-- name: q :many\nWITH x AS (SELECT 1) SELECT * FROM x\n").read_only
    assert not one("-- name: q :many\nWITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x\n").read_only
    assert not one("-- name: q :exec\nUPDATE t SET a = 1\n").read_only


def test_every_shipped_file_loads() -> None:
    files = sorted(sql_dir().glob("*.sql"))
    assert files
    for path in files:
        assert load_queries(path.stem).queries, path


def test_missing_file() -> None:
    with pytest.raises(QueryError, match="sql/nope.sql does not exist"):
        load_queries("nope")


def test_load_file_names_errors_as_told(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datalayer._sql import load_file

    path = tmp_path / "notes.sql"
    path.write_text("-- name: q :many\nSELECT 1\n")
    assert load_file(path).queries["q"].location == "sql/notes.sql:1 notes.q"
    assert load_file(path, "svc/sql/notes.sql").where == "svc/sql/notes.sql"
    path.write_bytes(b"-- name: q :many\nSELECT '\xff'\n")
    with pytest.raises(QueryError, match=r"svc/sql/notes\.sql: not UTF-8 text"):
        load_file(path, "svc/sql/notes.sql")
