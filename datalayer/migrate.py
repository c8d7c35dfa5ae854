"""Schema migrations (yoyo) with a checksum ledger, a cross-process lock and stale-lock recovery.

>>> setup_database()            # doctest: +SKIP
['0001.core-tables', '0002.system-log', '0003.cache-entries']

The migrations come from the project's sources (``Project.migration_sources()``): datalayer's
built-in schema first when ``builtin = true``, then the service's folders, each applied in full
before the next. Migration ids are unique across sources, and with ``builtin = true`` the service's
first migrations depend on a built-in one; a database keeps the ``builtin`` it was migrated with.

``setup_database`` is idempotent and safe to run from several processes at once: they serialise on
a PostgreSQL advisory lock (released by the server if a process dies) and on yoyo's lock row (so
that a concurrent plain ``yoyo apply`` waits too). A lock row left behind by a killed process is
cleared with a message. An applied migration whose file changed is refused until resolved.

A service's folder verifies and records its own files under plain ``yoyo apply`` too with a
``post-apply.py`` of one line (yoyo runs it after every apply that applied something)::

    from datalayer.migrate import ledger_steps; ledger_steps(__file__)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg

from datalayer import _ledger
from datalayer import _migration_sources as _sources
from datalayer._default_target import default_target
from datalayer._direct import MARKER_OPTION, connect_direct, same_database_problem
from datalayer._translate import describe_error
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError, MigrationError
from datalayer.project import Project, find_project

__all__ = [
    "STALE_LOCK_SECONDS",
    "MigrationState",
    "ledger_steps",
    "migration_status",
    "plan_sql",
    "reset_database",
    "rollback_all",
    "setup_database",
    "yoyo_backend",
]

log = logging.getLogger("datalayer")

# Key of the advisory lock every datalayer migrator takes (any fixed bigint; this one spells "dl-mig").
MIGRATION_LOCK_KEY = 0x646C2D6D6967
STALE_LOCK_SECONDS = 15 * 60
LOCK_WAIT_SECONDS = 120


@attrs.frozen
class MigrationState:
    id: str
    applied: bool
    applied_at: datetime | None
    changed: bool
    problem: str | None
    source: str | None = None  # "datalayer" (built-in) or the service's folder; None for a file no source has


def _settings_and_target(
    settings: Settings | None, target: DatabaseTarget | None
) -> tuple[Settings, DatabaseTarget, DatabaseTarget]:
    """The settings, the direct target and the (possibly pooled) target itself."""
    settings = settings or Settings.from_env()
    if target is None:
        target = default_target(settings)
    # Migrations hold a session (an advisory lock, yoyo's connection): never through a transaction pooler.
    return settings, settings.direct_target(target), target


def _connect_params(target: DatabaseTarget, settings: Settings | None = None) -> dict[str, Any]:
    from datalayer._connection import network_params

    settings = settings or Settings()
    # A server that accepts the connection and never answers, or a dead network, must not hang a
    # deploy: bounded like every other connection (the statements themselves may run long).
    params: dict[str, Any] = {
        **network_params(settings),
        "connect_timeout": str(settings.connect_timeout),
        **target.params,
    }
    if target.password is not None:
        params["password"] = target.password.value
    params["application_name"] = "datalayer-migrate"
    # Migrations may legitimately run long; they must not wait long for a lock held by live traffic.
    # client_connection_check_interval: if the migrating process dies (kill -9), its backend notices
    # within a second and rolls back, releasing the locks, instead of running its statement to the end.
    params["options"] = (
        "-c statement_timeout=0 -c lock_timeout=30s -c TimeZone=UTC -c client_connection_check_interval=1000 "
        + MARKER_OPTION
    )
    return params


def yoyo_backend(target: DatabaseTarget, settings: Settings | None = None) -> Any:
    """A yoyo backend (psycopg 3) for ``target``."""
    from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
    from yoyo.connections import DatabaseURI

    params = _connect_params(target, settings)
    dbname = params.pop("dbname", None)
    user = params.pop("user", None)
    password = params.pop("password", None)
    uri = DatabaseURI(
        scheme="postgresql+psycopg",
        username=user,
        password=password,
        hostname=None,
        port=None,
        database=dbname,
        args={k: str(v) for k, v in params.items()},
    )
    backend = PostgresqlPsycopgBackend(uri, "_yoyo_migration")
    from datalayer._direct import prove_session

    prove_session(backend.connection, settings or Settings(), target)
    backend.init_database()  # creates yoyo's lock table, as yoyo.get_backend does
    return backend


def ledger_steps(hook_file: str | os.PathLike[str]) -> None:
    """The checksum ledger as steps of a yoyo ``post-apply.py``: ``ledger_steps(__file__)``.

    Records the hook folder's migrations just applied, under the folder's source name, then verifies that
    no applied migration of the folder changed since it was applied (MigrationError naming what yoyo
    applied and what was refused). yoyo runs the hook after applying: the record is committed apart from
    the hook's transaction, so a refusal does not leave yoyo's work unrecorded. Other folders' migrations
    are theirs to check. Call it at the top level of a post-apply file only.
    """
    from yoyo import step

    directory = Path(hook_file).resolve().parent

    def verify_and_record(conn: psycopg.Connection[Any]) -> None:
        _sources.hook_step(conn, directory)

    try:
        step(verify_and_record)
    except AttributeError:  # yoyo found no migration being loaded up the stack
        raise MigrationError(
            f"ledger_steps({str(hook_file)!r}) adds steps to a yoyo migration: call it at the top level of a "
            "post-apply.py that yoyo loads"
        ) from None


@contextmanager
def _reading(target: DatabaseTarget, settings: Settings, what: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only look at ``target``: any failure to reach or read it is a MigrationError."""
    try:
        with connect_direct({**_connect_params(target, settings), "autocommit": True}, settings, target) as conn:
            conn.read_only = True
            yield conn
    except psycopg.Error as e:
        raise MigrationError(f"cannot {what} {target.display}: {describe_error(e)}") from None


@contextmanager
def _migration_lock(
    target: DatabaseTarget, settings: Settings, pooled: DatabaseTarget
) -> Iterator[psycopg.Connection[Any]]:
    """Serialise migrators across processes; yields a spare autocommit connection."""
    params = _connect_params(target, settings)
    params["options"] = (
        f"-c lock_timeout={LOCK_WAIT_SECONDS}s -c statement_timeout=0 -c TimeZone=UTC "
        f"-c client_connection_check_interval=1000 {MARKER_OPTION}"
    )
    try:
        conn = connect_direct({**params, "autocommit": True}, settings, target)
    except psycopg.OperationalError as e:
        raise MigrationError(f"cannot connect to {target.display} to migrate: {describe_error(e)}") from None
    try:
        if (problem := same_database_problem(conn, settings, pooled)) is not None:
            raise ConfigError(problem, variable="DATABASE_DIRECT_URL")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(
                f"another process has been migrating {target.display} for over {LOCK_WAIT_SECONDS} s; "
                "wait for it or find it in pg_stat_activity (application_name datalayer-migrate)"
            ) from None
        yield conn
    finally:
        conn.close()  # ends the session, which releases the advisory lock


def _clear_stale_yoyo_lock(conn: psycopg.Connection[Any]) -> None:
    """Remove yoyo's lock row when the process that left it is gone or it is too old.

    We hold the advisory lock, so no datalayer migrator is running; a live lock row can only belong to a
    plain ``yoyo apply``, which is recent and whose pid exists.
    """
    exists = conn.execute("SELECT to_regclass('yoyo_lock') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return
    row = conn.execute(
        "SELECT pid, ctime, extract(epoch FROM (now() AT TIME ZONE 'UTC') - ctime) FROM yoyo_lock"
    ).fetchone()
    if row is None:
        return
    pid, ctime, age = row[0], row[1], float(row[2] or 0)
    if not _pid_alive(pid):
        reason = f"its process {pid} no longer exists"
    elif age > STALE_LOCK_SECONDS:
        reason = f"it is {age / 60:.0f} minutes old (bound {STALE_LOCK_SECONDS // 60} minutes)"
    else:
        return
    conn.execute("DELETE FROM yoyo_lock WHERE pid = %s AND ctime = %s", (pid, ctime))
    log.warning("datalayer: cleared a stale migration lock left at %s UTC: %s", ctime, reason)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def setup_database(
    *,
    settings: Settings | None = None,
    target: DatabaseTarget | None = None,
    project: Project | None = None,
    partitions_ahead: int | None = None,
) -> list[str]:
    """Apply the pending migrations of every source of ``project`` (default: ``find_project()``) and, with
    the built-in schema, create system_log partitions ``partitions_ahead`` days ahead (default 7).

    Returns the ids of the migrations applied (empty when up to date). Raises MigrationError, changing
    nothing, when an applied migration's file changed since, when two sources define the same migration
    id, when a first migration of the service does not depend on the built-in schema (builtin = true), or
    when the database was migrated with the other ``builtin`` setting.
    """
    from datalayer.partitions import DEFAULT_AHEAD, check_ahead, ensure_log_partitions

    ahead = check_ahead(DEFAULT_AHEAD if partitions_ahead is None else partitions_ahead, "partitions_ahead")
    project = project or find_project()
    sources = list(project.migration_sources())
    _sources.check_sources(sources)
    settings, target, pooled = _settings_and_target(settings, target)
    directories = _sources.source_dirs(sources)
    applied: list[str] = []
    with _migration_lock(target, settings, pooled) as conn:
        _clear_stale_yoyo_lock(conn)
        _sources.check_builtin_switch(conn, project)
        _ledger.verify(conn, directories)
        backend = yoyo_backend(target, settings)
        try:
            with backend.lock(timeout=LOCK_WAIT_SECONDS):
                pending = _sources.in_order(backend, sources)
                applied = [m.id for m in pending]
                if pending:
                    log.info("datalayer: applying migrations %s to %s", ", ".join(applied), target.display)
                _sources.apply_recorded(backend, conn, pending, directories, target.display)
        except MigrationError:
            raise
        except Exception as e:
            raise MigrationError(f"migrating {target.display} failed: {describe_error(e)}") from e
        finally:
            backend.connection.close()
        if project.builtin:
            ensure_log_partitions(conn, ahead=ahead)
    return applied


def rollback_all(
    *, settings: Settings | None = None, target: DatabaseTarget | None = None, project: Project | None = None
) -> list[str]:
    """Roll back every applied migration of ``project``'s sources (newest first, the service's before the
    built-in ones); returns their ids. Refuses, rolling back nothing, on what ``setup_database`` refuses
    (an applied file changed or gone, duplicate ids, missing depends, a switched ``builtin``)."""
    project = project or find_project()
    sources = list(project.migration_sources())
    _sources.check_sources(sources)
    settings, target, pooled = _settings_and_target(settings, target)
    with _migration_lock(target, settings, pooled) as conn:
        _clear_stale_yoyo_lock(conn)
        _sources.check_builtin_switch(conn, project)
        # A migration whose file is gone cannot be rolled back: dropping the others would strand it.
        _ledger.verify(conn, _sources.source_dirs(sources))
        backend = yoyo_backend(target, settings)
        try:
            with backend.lock(timeout=LOCK_WAIT_SECONDS):
                to_roll = _sources.in_order(backend, sources, rollback=True)
                ids = [m.id for m in to_roll]
                backend.rollback_migrations(to_roll)
        except Exception as e:
            raise MigrationError(f"rolling back {target.display} failed: {describe_error(e)}") from e
        finally:
            backend.connection.close()
        with conn.transaction():
            _ledger.record(conn, _sources.source_dirs(sources))
    return ids


def reset_database(
    *,
    confirm: bool = False,
    settings: Settings | None = None,
    target: DatabaseTarget | None = None,
    project: Project | None = None,
) -> list[str]:
    """Roll back every migration and apply them again: ALL DATA IS LOST. Refuses without confirm=True, and
    before dropping anything on what ``setup_database`` refuses."""
    if confirm is not True:
        raise MigrationError("reset_database drops every table and its data; call it with confirm=True")
    project = project or find_project()
    settings = settings or Settings.from_env()
    rollback_all(settings=settings, target=target, project=project)
    return setup_database(settings=settings, target=target, project=project)


def migration_status(
    *, settings: Settings | None = None, target: DatabaseTarget | None = None, project: Project | None = None
) -> list[MigrationState]:
    """Every migration of every source of ``project``, in apply order: applied or not, when, and whether
    its file changed since (a first migration that must depend on the built-in schema says so too)."""
    project = project or find_project()
    sources = list(project.migration_sources())
    duplicates = _sources.duplicate_problems(sources)
    if duplicates:
        raise MigrationError("; ".join(duplicates))
    settings, target, _ = _settings_and_target(settings, target)
    with _reading(target, settings, "read the migration state of") as conn:
        _sources.check_builtin_switch(conn, project)
        issues = {i.migration_id: i for i in _ledger.changed(conn, _sources.source_dirs(sources))}
        applied = _ledger.applied(conn)
    unrooted = {p.split(" ", 1)[0]: p for p in _sources.depends_problems(sources)}
    states = []
    for source in sources:
        for mid, path in _ledger.migration_files(source.path).items():
            issue = issues.get(mid)
            problem = issue.describe() if issue else unrooted.get(f"{source.name}/{path.name}")
            states.append(
                MigrationState(mid, mid in applied, applied.get(mid), issue is not None, problem, source.name)
            )
    known = {st.id for st in states}
    states += [
        MigrationState(mid, True, applied[mid], True, issue.describe(), issue.source)
        for mid, issue in issues.items()
        if mid not in known
    ]
    return states


def plan_sql(
    *, settings: Settings | None = None, target: DatabaseTarget | None = None, project: Project | None = None
) -> str:
    """The SQL ``setup_database`` would run now, in order, without running it (nothing is written)."""
    project = project or find_project()
    sources = list(project.migration_sources())
    _sources.check_sources(sources)
    settings, target, _ = _settings_and_target(settings, target)
    with _reading(target, settings, "plan the migrations of") as conn:
        _sources.check_builtin_switch(conn, project)
        applied = _ledger.applied(conn)
    out = _sources.plan_lines(sources, applied)
    if project.builtin:
        from datalayer.partitions import DEFAULT_AHEAD, partition_days

        days = partition_days(DEFAULT_AHEAD)
        out.append(f"-- system_log partitions {days[0]} .. {days[-1]}, one transaction per day")
        out += [f"SELECT datalayer_ensure_log_partition('{d.isoformat()}');" for d in days]
    return "\n".join(line for line in out if line) + "\n"


def wait_for_server(target: DatabaseTarget, timeout: float = 30.0) -> None:
    """Block until ``target`` accepts connections (or MigrationError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    params = {**_connect_params(target), "connect_timeout": "2"}
    while True:
        try:
            psycopg.connect(**params).close()
            return
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline:
                raise MigrationError(f"{target.display} did not accept connections: {describe_error(e)}") from None
            time.sleep(0.2)
