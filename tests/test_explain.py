"""The filtered listings use the seed's indexes: the index named in each case is in the plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import analysis, file, generation, user

from datalayer._sql import _to_dollar, load_queries

NOW = datetime.now(UTC)
ANY_PAGE = {"after_created": None, "after_id": None, "fetch": 51}
NO_FILTERS = {"status": None, "analysis_type": None, "created_after": None, "created_before": None,
              "name_prefix": None}

CASES = [
    ("users", "get_by_email", {"email_key": "a@example.com"}, "users_email_key_key"),
    ("users", "get_by_username", {"username": "ann"}, "users_username_key"),
    ("analyses", "find_for_user", {"user_id": 1, **NO_FILTERS, **ANY_PAGE}, "data_analyses_user_created_idx"),
    ("analyses", "find_for_user", {"user_id": 1, **NO_FILTERS, "status": "pending", **ANY_PAGE},
     "data_analyses_user_created_idx"),
    ("analyses", "find", {**NO_FILTERS, "status": "running", **ANY_PAGE}, "data_analyses_status_created_idx"),
    ("analyses", "find", {**NO_FILTERS, **ANY_PAGE}, "data_analyses_created_idx"),
    ("analysis_files", "list_for_analysis", {"analysis_id": 1, "file_type": "csv", "user_id": None},
     "analysis_files_analysis_type_idx"),
    ("analysis_files", "find", {"analysis_id": None, "file_type": "png", "filename_prefix": None, "after_id": None,
                                "fetch": 51}, "analysis_files_file_type_idx"),
    ("tool_generations", "find_for_user", {"user_id": 1, "status": None, "tool_type": None, "created_after": None,
                                           "created_before": None, **ANY_PAGE}, "tool_generations_user_created_idx"),
    ("tool_generations", "find", {"status": "failed", "tool_type": None, "created_after": None, "created_before": None,
                                  **ANY_PAGE}, "tool_generations_status_created_idx"),
    ("tool_generations", "find", {"status": None, "tool_type": "chart", "created_after": None, "created_before": None,
                                  **ANY_PAGE}, "tool_generations_tool_type_idx"),
    ("system_log", "find", {"since": NOW - timedelta(hours=1), "until": NOW, "service": "billing", "level": None,
                            "user_id": None, **ANY_PAGE}, "service_created_at_idx"),
    ("system_log", "find", {"since": NOW - timedelta(hours=1), "until": NOW, "service": None, "level": "ERROR",
                            "user_id": None, **ANY_PAGE}, "level_created_at_idx"),
    ("cache_entries", "purge_expired", {}, "cache_entries_expires_at_idx"),
]


def _indexes(plan: Any) -> set[str]:
    found, stack = set(), [plan]
    while stack:
        node = stack.pop()
        if "Index Name" in node:
            found.add(node["Index Name"])
        stack += node.get("Plans", [])
    return found


def _populate(db: Any) -> None:
    from datalayer import system_log_repo
    from datalayer.repos.system_log import LogEvent

    for _ in range(3):
        u = user(db)
        a = analysis(db, u)
        file(db, a)
        generation(db, u)
    # Realistic selectivity for the planner: many services and levels over the last hour.
    system_log_repo.bulk_insert(db, [
        LogEvent(service=f"svc{i % 40}", level=("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")[i % 6],
                 message="m", created_at=NOW - timedelta(seconds=i))
        for i in range(3000)])
    db.execute("ANALYZE")


@pytest.mark.parametrize(("domain", "name", "params", "index"), CASES,
                         ids=[f"{d}.{n}:{i}" for d, n, _, i in CASES])
def test_listing_uses_index(db: Any, domain: str, name: str, params: dict[str, Any], index: str) -> None:
    _populate(db)
    q = load_queries(domain).queries[name]
    # Tiny test tables make a sequential scan cheapest; forbidding it shows whether the index can serve.
    db.execute("SET enable_seqscan = off")
    plan = db.execute("EXPLAIN (FORMAT JSON) " + q.sql, params).fetchone()[0][0]["Plan"]
    names = _indexes(plan)
    assert any(index in n for n in names), f"{q.location}: expected {index} in the plan, got {names}"


@pytest.mark.parametrize("name", ["find_for_user"])
def test_user_listing_keeps_its_index_in_the_generic_plan(db: Any, name: str) -> None:
    # After five executions psycopg prepares a statement and PostgreSQL may switch to a generic plan;
    # the owner's listing must not lose its index then.
    _populate(db)
    q = load_queries("analyses").queries[name]
    db.execute("SET enable_seqscan = off")
    db.execute("SET plan_cache_mode = force_generic_plan")
    db.execute("PREPARE g AS " + _to_dollar(q.sql))
    types = db.execute("SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'g'").fetchone()[0]
    args = ", ".join(f"NULL::{t}" if i else f"1::{t}" for i, t in enumerate(types))
    args = args.replace(f"NULL::{types[-1]}", f"51::{types[-1]}")
    plan = db.execute(f"EXPLAIN (FORMAT JSON) EXECUTE g({args})").fetchone()[0][0]["Plan"]
    assert "data_analyses_user_created_idx" in _indexes(plan)
