"""``check_database_health()``: is the database usable, migrated and ready for today's logs?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

import psycopg

from datalayer import _ledger, sql
from datalayer import _migration_sources as _sources
from datalayer._default_target import default_target
from datalayer._direct import MARKER_OPTION, connect_direct, same_database_problem
from datalayer._translate import describe_error
from datalayer.config import DatabaseTarget, Settings
from datalayer.partitions import list_log_partitions
from datalayer.project import Project, builtin_sql_dir, find_project

__all__ = ["HealthReport", "check_database_health"]


class Check(TypedDict):
    ok: bool
    detail: str


class HealthReport(TypedDict):
    status: Literal["healthy", "unhealthy"]
    checks: dict[str, Check]


_q = sql.load(builtin_sql_dir() / "maintenance.sql")
_default_rows = _q.bind("default_partition_rows", int)
_invalid_indexes = _q.bind("invalid_indexes", str)


def check_database_health(
    *,
    settings: Settings | None = None,
    target: DatabaseTarget | None = None,
    project: Project | None = None,
    timeout: int = 5,
) -> HealthReport:
    """Connectivity, migrations, partitions and indexes; never raises.

    ``{"status": "healthy" | "unhealthy", "checks": {name: {"ok": bool, "detail": str}}}`` with checks
    ``connect``, ``migrations`` (every source of ``project``, default ``find_project()``: none pending or
    changed), ``partitions`` (today and the next 2 days exist), ``default_partition`` (empty) and
    ``indexes`` (none invalid). The two partition checks are the built-in schema's: only with builtin.
    Behind a transaction pooler also ``session_settings`` (an autocommit session holds the settings'
    timeouts) and, with DATABASE_DIRECT_URL, ``direct`` (it reaches the server, and the same database).
    Each check runs in a transaction of its own bounded by ``timeout`` seconds.
    """
    checks: dict[str, Check] = {}
    try:
        project = project or find_project()
        settings = settings or Settings.from_env()
        if target is None:
            target = default_target(settings)
        # A transaction pooler refuses the options parameter and cannot keep prepared statements: there
        # the session settings are the pooler's (connect_query) or the role's (datalayer roles create).
        session: dict[str, Any] = (
            {"options": f"-c statement_timeout={timeout}s -c TimeZone=UTC"}
            if settings.pooler == "none"
            else {"prepare_threshold": None}
        )
        conn = psycopg.connect(
            target.conninfo(),
            autocommit=True,
            connect_timeout=str(timeout),
            application_name="datalayer-health",
            **session,
        )
    except Exception as e:
        checks["connect"] = {"ok": False, "detail": _first_line(e)}
        return {"status": "unhealthy", "checks": checks}
    with conn:
        version = conn.info.server_version
        checks["connect"] = {"ok": True, "detail": f"PostgreSQL {version // 10000}.{version % 10000}"}
        run = _bounded(conn, timeout)
        # Outside a transaction: they read what an autocommit read gets, and open connections through the
        # pooler, which may have one server connection only.
        if settings.pooler != "none":
            _run_check(checks, "session_settings", lambda: _session_settings(conn, settings))
        if settings.pooler != "none" and settings.direct is not None:
            _run_check(checks, "direct", lambda: _direct(settings, target))
        run(checks, "migrations", lambda: _migrations(conn, project))
        if project.builtin:
            run(checks, "partitions", lambda: _partitions(conn))
            run(checks, "default_partition", lambda: _default_partition(conn))
        run(checks, "indexes", lambda: _indexes(conn))
    healthy = all(c["ok"] for c in checks.values())
    return {"status": "healthy" if healthy else "unhealthy", "checks": checks}


def _bounded(conn: psycopg.Connection[Any], timeout: int) -> Any:
    """``_run_check`` with each check in a transaction of its own bounded by ``timeout`` seconds: ``SET
    LOCAL`` holds behind a transaction pooler too, which ignores the connection's ``options``."""

    def run(checks: dict[str, Check], name: str, fn: Any) -> None:
        def bounded() -> Check:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{timeout}s",))
                result: Check = fn()
                return result

        _run_check(checks, name, bounded)

    return run


def _session_settings(conn: psycopg.Connection[Any], settings: Settings) -> Check:
    from datalayer.pool import session_drift

    drift = session_drift(conn, settings)
    if drift:
        return {
            "ok": False,
            "detail": f"reads outside transactions run with {', '.join(drift)}: give the role the settings "
            "(`datalayer roles create`, or ALTER ROLE <user> IN DATABASE <db> SET ...) or set them in "
            "PgBouncer's connect_query",
        }
    return {"ok": True, "detail": "the pooled sessions hold the settings"}


def _direct(settings: Settings, target: DatabaseTarget) -> Check:
    direct = settings.direct_target(target)
    params: dict[str, Any] = {
        "conninfo": direct.conninfo(),
        "autocommit": True,
        "connect_timeout": str(settings.connect_timeout),
        "application_name": "datalayer-health",
        "options": MARKER_OPTION,
    }
    with connect_direct(params, settings, direct) as conn:
        problem = same_database_problem(conn, settings, target)
    if problem:
        return {"ok": False, "detail": problem}
    return {"ok": True, "detail": f"DATABASE_DIRECT_URL reaches the server of DATABASE_URL ({direct.display})"}


def _run_check(checks: dict[str, Check], name: str, fn: Any) -> None:
    try:
        checks[name] = fn()
    except psycopg.errors.InsufficientPrivilege as e:
        # A service's own role must be able to run its readiness check: `roles create` grants it.
        checks[name] = {
            "ok": False,
            "detail": f"{_first_line(e)} (run `datalayer roles create` as the schema owner to grant the "
            "roles datalayer made what health reads)",
        }
    except Exception as e:
        checks[name] = {"ok": False, "detail": _first_line(e)}


def _migrations(conn: psycopg.Connection[Any], project: Project) -> Check:
    sources = project.migration_sources()
    problems = _sources.duplicate_problems(sources)
    switched = _sources.builtin_switch_problem(conn, project)
    if problems or switched:
        return {"ok": False, "detail": "; ".join([*problems, *([switched] if switched else [])])}
    applied = _ledger.applied(conn)
    files = [mid for s in sources for mid in _ledger.migration_files(s.path)]
    pending = [mid for mid in files if mid not in applied]
    issues = _ledger.changed(conn, _sources.source_dirs(sources))
    if issues:
        return {"ok": False, "detail": "; ".join(i.describe() for i in issues)}
    if pending:
        return {"ok": False, "detail": f"pending: {', '.join(pending)} (run datalayer migrate)"}
    return {"ok": True, "detail": f"{len(applied)} applied, none pending"}


def _partitions(conn: psycopg.Connection[Any]) -> Check:
    today = datetime.now(UTC).date()
    needed = [today + timedelta(days=i) for i in range(3)]
    have = {p.day for p in list_log_partitions(conn)}
    missing = [d.isoformat() for d in needed if d not in have]
    if missing:
        return {
            "ok": False,
            "detail": f"missing system_log partitions for {', '.join(missing)} (run datalayer partitions maintain)",
        }
    return {"ok": True, "detail": f"today and the next 2 days present ({len(have) - (None in have)} day partitions)"}


def _default_partition(conn: psycopg.Connection[Any]) -> Check:
    rows = _default_rows.scalar(conn)
    if rows:
        return {"ok": False, "detail": f"{rows} rows wait in system_log_default (run datalayer partitions maintain)"}
    return {"ok": True, "detail": "empty"}


def _indexes(conn: psycopg.Connection[Any]) -> Check:
    invalid = _invalid_indexes.many(conn)
    if invalid:
        return {"ok": False, "detail": f"invalid: {', '.join(invalid)} (drop and recreate them)"}
    return {"ok": True, "detail": "all valid"}


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {describe_error(e)}"
