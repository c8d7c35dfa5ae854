"""SECURITY DEFINER functions and least-privilege roles under attack (issue 11, items 8 and 14).

A role that may CREATE in the schema (the default before PostgreSQL 15, granted explicitly here)
plants look-alike functions and temporary tables; the definer functions must neither run its code
as their owner nor act on its tables, and must enforce their limits whoever calls them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from helpers import direct_target
from psycopg import sql

from datalayer import (
    DataLayerError,
    cache_entry_repo,
    check_database_health,
    cleanup_old_data,
    get_database_stats,
    system_log_repo,
    user_repo,
)
from datalayer.config import DatabaseTarget, Secret
from datalayer.errors import ConfigError, ValidationError
from datalayer.pool import DataLayerPool, connection
from datalayer.repos.system_log import LogEvent
from datalayer.roles import create_roles
from datalayer.testing import TestServer, settings_for_tests

_n = itertools.count(1)
PASSWORD = "Definer-Test-Pw-1"
DEFINERS = (
    "datalayer_ensure_log_partition(date)",
    "datalayer_ensure_log_partitions(integer)",
    "datalayer_drop_log_partitions(timestamptz)",
    "datalayer_delete_old_logs(timestamptz)",
)


@pytest.fixture
def names(datalayer_server: TestServer) -> Iterator[dict[str, str]]:
    """Unique role names, dropped after the test's database is gone (roles are cluster-wide)."""
    n = f"{os.getpid()}_{next(_n)}"
    roles = {k: f"dl_{k}_{n}" for k in ("app", "ro", "planter", "other")}
    yield roles
    with psycopg.connect(datalayer_server.target.conninfo(), autocommit=True) as c:
        for name in roles.values():
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _login_role(db: Any, name: str) -> None:
    verifier = db.pgconn.encrypt_password(PASSWORD.encode(), name.encode(), b"scram-sha-256").decode()
    db.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(verifier)))


def _connect(pool: DataLayerPool, role: str) -> psycopg.Connection[Any]:
    target = DatabaseTarget(params={**direct_target(pool).params, "user": role}, password=Secret(PASSWORD))
    return psycopg.connect(target.conninfo(), autocommit=True)


def _planter(db: Any, planter: str) -> None:
    """A role as PostgreSQL 14 made every role: free to CREATE in public, and allowed to call the functions."""
    _login_role(db, planter)
    db.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(sql.Identifier(planter)))
    db.execute(sql.SQL("GRANT SELECT, INSERT ON system_log TO {}").format(sql.Identifier(planter)))
    for f in DEFINERS:
        if db.execute("SELECT to_regprocedure(%s)", (f,)).fetchone() != (None,):
            db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(f), sql.Identifier(planter)))


PLANTS = """
CREATE TABLE public.pwned (who text, super boolean);
GRANT INSERT ON public.pwned TO PUBLIC;
CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN pg_catalog.to_char($1::timestamp, $2);
END $$;
CREATE FUNCTION public.substr(name, integer) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN pg_catalog.substr($1::text, $2);
END $$;
CREATE FUNCTION public.pg_total_relation_size(oid) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN pg_catalog.pg_total_relation_size($1::regclass);
END $$;
CREATE FUNCTION public.pg_partition_tree(text) RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
END $$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN pg_catalog.format($1, $2);
END $$;
CREATE FUNCTION public.format(text, name) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.pwned SELECT current_user, (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
    RETURN pg_catalog.format($1, $2);
END $$;
"""


def _days_ago(n: int) -> date:
    return (datetime.now(UTC) - timedelta(days=n)).date()


def test_planted_functions_never_run_as_the_owner(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    planter = names["planter"]
    with connection(dl_pool) as db:
        _planter(db, planter)
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (_days_ago(20),))
    with _connect(dl_pool, planter) as c:
        c.execute(PLANTS)
        # the look-alikes do win for a caller that resolves names through public with implicit casts
        c.execute("SELECT to_char(current_date, 'YYYY'), substr('x'::name, 1), pg_total_relation_size(0::oid)")
        assert c.execute("SELECT who, super FROM public.pwned").fetchall() == [(planter, False)] * 3
        c.execute("DELETE FROM public.pwned")
        # what an application role does every day, and what a writer may call at any time
        c.execute("SELECT datalayer_ensure_log_partition(%s)", (_days_ago(10),))
        c.execute("SELECT datalayer_ensure_log_partitions(2)")
        c.execute("SELECT * FROM datalayer_drop_log_partitions(now() - interval '15 days')")
        # (before the fix: [('postgres', True)], the planted code ran as the superuser owning them)
        assert c.execute("SELECT who, super FROM public.pwned").fetchall() == []
        c.execute("SELECT datalayer_delete_old_logs(now() - interval '15 days')")
    with connection(dl_pool) as db:
        assert db.execute("SELECT who, super FROM public.pwned").fetchall() == []
        # nor do the owner's own dashboards and readiness checks pick the look-alikes up
        stats = get_database_stats(db)
        assert stats["tables"]["system_log"]["total_bytes"] > 0 and stats["log_partitions"]
        assert check_database_health(target=direct_target(dl_pool), settings=settings_for_tests())["checks"]["partitions"]["ok"]
        assert db.execute("SELECT who, super FROM public.pwned").fetchall() == []
        # the calls did their work all the same
        parts = {r[0] for r in db.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                         "WHERE i.inhparent = 'system_log'::regclass")}
        assert f"system_log_p{_days_ago(10):%Y%m%d}" in parts
        assert f"system_log_p{_days_ago(20):%Y%m%d}" not in parts


def test_temporary_tables_do_not_hijack_the_functions(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    planter = names["planter"]
    day, old = _days_ago(5), _days_ago(40)
    part, old_part = f"system_log_p{day:%Y%m%d}", f"system_log_p{old:%Y%m%d}"
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    with connection(dl_pool) as db:
        _planter(db, planter)
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (old,))
        # a row of `day` waits in the default partition (its day has no partition yet)
        system_log_repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message="real", created_at=noon),
                                         LogEvent(service="s", level="INFO", message="old",
                                                  created_at=noon - timedelta(days=35))])
    with _connect(dl_pool, planter) as c:
        for name in ("system_log", "system_log_default", part, old_part):
            c.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE public.system_log INCLUDING DEFAULTS)").format(sql.Identifier(name)))
        c.execute(sql.SQL("INSERT INTO pg_temp.{} (id, created_at, service, level, message) "
                          "VALUES (1, %s, 'fake', 'INFO', 'fake'), (2, %s, 'fake', 'INFO', 'fake')").format(
            sql.Identifier(old_part)), (noon, noon))
        c.execute("INSERT INTO pg_temp.system_log (id, created_at, service, level, message) "
                  "VALUES (1, now() - interval '31 days', 'fake', 'INFO', 'fake')")
        assert c.execute("SELECT datalayer_ensure_log_partition(%s)", (day,)).fetchone() == (True,)
        dropped = c.execute("SELECT partition_name, row_count FROM datalayer_drop_log_partitions("
                            "now() - interval '30 days')").fetchall()
        assert dropped == [(old_part, 1)]  # the real partition's one row, not the temporary table's two
        # the waiting row moved into the real partition, not into the caller's temporary table
        real = "SELECT count(*) FROM public.system_log WHERE message = 'real' AND tableoid = %s::regclass"
        assert c.execute(real, (f"public.{part}",)).fetchone() == (1,)
        # the boundary delete works on the real table (cutoff one hour after the row, in its day)
        assert c.execute("SELECT datalayer_delete_old_logs(%s)", (noon + timedelta(hours=1),)).fetchone() == (1,)
        assert c.execute(real, (f"public.{part}",)).fetchone() == (0,)
        # the caller's temporary tables are untouched
        assert c.execute("SELECT count(*) FROM pg_temp.system_log").fetchone() == (1,)
        assert c.execute(sql.SQL("SELECT count(*) FROM pg_temp.{}").format(sql.Identifier(old_part))).fetchone() == (2,)
        assert c.execute(sql.SQL("SELECT count(*) FROM pg_temp.{}").format(sql.Identifier(part))).fetchone() == (0,)
    with connection(dl_pool) as db:
        assert db.execute("SELECT count(*) FROM system_log WHERE message = 'old'").fetchone() == (0,)
        assert db.execute("SELECT to_regclass(%s)", (old_part,)).fetchone() == (None,)


def test_a_planted_table_under_a_partition_name_is_not_adopted(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    planter = names["planter"]
    day = _days_ago(3)
    part = f"system_log_p{day:%Y%m%d}"
    with connection(dl_pool) as db:
        _planter(db, planter)
    with _connect(dl_pool, planter) as c:
        c.execute(sql.SQL("CREATE TABLE public.{} (LIKE public.system_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                  .format(sql.Identifier(part)))
        with pytest.raises(psycopg.errors.DuplicateTable, match="not owned by the owner of system_log"):
            c.execute("SELECT datalayer_ensure_log_partition(%s)", (day,))
    with connection(dl_pool) as db:
        assert db.execute("SELECT count(*) FROM pg_inherits WHERE inhrelid = %s::regclass", (part,)).fetchone() == (0,)


@pytest.mark.parametrize("day", ["0044-03-15 BC", "infinity", "-infinity", "1969-12-31", None])
def test_partition_days_are_bounded_in_sql(dl_pool: DataLayerPool, day: str | None) -> None:
    with connection(dl_pool) as db, pytest.raises(psycopg.Error, match="must be between|must not be null"):
        db.execute("SELECT datalayer_ensure_log_partition(%s::date)", (day,))


def test_function_limits_hold_when_called_directly(dl_pool: DataLayerPool) -> None:
    with connection(dl_pool) as db:
        today = db.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]
        for bad in (today + timedelta(days=367), today + timedelta(days=5000)):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be between"):
                db.execute("SELECT datalayer_ensure_log_partition(%s)", (bad,))
        for days in (-1, 367, 100000):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="days_ahead"):
                db.execute("SELECT datalayer_ensure_log_partitions(%s)", (days,))
        assert db.execute("SELECT datalayer_ensure_log_partition(%s)", (today + timedelta(days=366),)).fetchone()
        # today's and later partitions are never dropped, today's rows never deleted
        system_log_repo.create(db, service="s", level="INFO", message="today")
        for cutoff in ("now()", "now() + interval '400 days'", "'infinity'::timestamptz"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="start of today"):
                db.execute(f"SELECT * FROM datalayer_drop_log_partitions({cutoff})")
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="start of today"):
                db.execute(f"SELECT datalayer_delete_old_logs({cutoff})")
        for fn in ("SELECT * FROM datalayer_drop_log_partitions(NULL)", "SELECT datalayer_delete_old_logs(NULL)"):
            with pytest.raises(psycopg.errors.NullValueNotAllowed):
                db.execute(fn)
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
        assert db.execute("SELECT * FROM datalayer_drop_log_partitions(%s)", (midnight,)).fetchall() == []
        assert db.execute("SELECT datalayer_delete_old_logs(%s)", (midnight,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM system_log WHERE message = 'today'").fetchone() == (1,)
        assert db.execute("SELECT to_regclass(%s)", (f"system_log_p{today:%Y%m%d}",)).fetchone() != (None,)
        # the row-by-row delete stays inside the cutoff's day (and the default partition)
        ten = today - timedelta(days=10)
        db.execute("SELECT datalayer_ensure_log_partition(%s)", (ten,))
        system_log_repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message="ten days",
                                                  created_at=datetime(ten.year, ten.month, ten.day, 12, tzinfo=UTC))])
        assert db.execute("SELECT datalayer_delete_old_logs(now() - interval '2 days')").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM system_log WHERE message = 'ten days'").fetchone() == (1,)


def test_partitions_dropped_per_call_are_bounded(dl_pool: DataLayerPool) -> None:
    first = date(1990, 1, 1)
    with connection(dl_pool) as db:
        for i in range(103):
            db.execute("SELECT datalayer_ensure_log_partition(%s)", (first + timedelta(days=i),))
        cutoff = datetime(1991, 1, 1, tzinfo=UTC)
        sizes = [len(db.execute("SELECT * FROM datalayer_drop_log_partitions(%s)", (cutoff,)).fetchall())
                 for _ in range(3)]
        assert sizes == [100, 3, 0]
        # cleanup_old_data calls it until nothing is left, oldest first
        for i in range(105):
            db.execute("SELECT datalayer_ensure_log_partition(%s)", (first + timedelta(days=i),))
        assert cleanup_old_data(db, days=30)["partitions_dropped"] == 105


def test_roles_revoke_create_and_restrict(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    app, ro, planter = names["app"], names["ro"], names["planter"]
    with connection(dl_pool) as db:
        _login_role(db, planter)
        db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # PostgreSQL 14's default
        db.execute("ALTER TABLE users ADD COLUMN nickname text")  # a column added by a later migration
        # privileges an earlier datalayer version granted, which must not survive
        db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(app)))
        db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ro)))
        db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON system_log, users TO {}").format(sql.Identifier(app)))
        db.execute(sql.SQL("GRANT SELECT ON users TO {}").format(sql.Identifier(ro)))
        assert create_roles(db, app_role=app, readonly_role=ro, app_password=PASSWORD,
                            readonly_password=PASSWORD) == {app: False, ro: False}
        for role in (app, ro, planter):
            assert db.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,)).fetchone() == (False,)
        # the cache's pending invalidations (migration 0006) are written by the application role
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):  # (a list would mean "any of them")
            assert db.execute("SELECT has_table_privilege(%s, 'cache_invalidations', %s)",
                              (app, privilege)).fetchone() == (True,), privilege
        ann = user_repo.create(db, username="ann", email="ann@example.com", hashed_password="secret-hash")
        cache_entry_repo.set(db, "user:{1}", {"hashed_password": "secret-hash"}, ttl=600)  # a cached User
    with _connect(dl_pool, app) as c:
        c.execute("INSERT INTO system_log (service, level, message) VALUES ('s', 'INFO', 'm')")
        for statement in ("UPDATE system_log SET message = 'x'", "DELETE FROM system_log",
                          "DELETE FROM system_log_default", "TRUNCATE system_log",
                          "CREATE TABLE public.evil (id int)", "CREATE FUNCTION public.to_char(date, text) "
                          "RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(statement)
        assert c.execute("SELECT hashed_password FROM users WHERE id = %s", (ann.id,)).fetchone() == ("secret-hash",)
    with _connect(dl_pool, ro) as c:
        for statement in ("SELECT hashed_password FROM users", "SELECT * FROM users",
                          "SELECT u.id FROM users u WHERE u.hashed_password LIKE 's%'",
                          "SELECT value FROM cache_entries", "SELECT count(*) FROM cache_invalidations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(statement)
        assert c.execute("SELECT id, username, email, nickname, is_active FROM users").fetchall() == [
            (ann.id, "ann", ann.email, None, True)]
        assert c.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM system_log").fetchone() == (1,)
        stats = get_database_stats(c)  # dashboards run under the read-only role
        assert stats["users"] == 1 and sum(stats["log_events_last_hour"].values()) == 1


def test_cleanup_as_the_application_role(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = names["app"], names["ro"]
    now = datetime.now(UTC)
    with connection(dl_pool) as db:
        create_roles(db, app_role=app, readonly_role=ro, app_password=PASSWORD, readonly_password=PASSWORD)
        for d in range(28, 36):
            db.execute("SELECT datalayer_ensure_log_partition(%s)", (_days_ago(d),))
        stamps = [now - timedelta(days=d, hours=h) for d in range(28, 35) for h in (0, 6)]
        system_log_repo.bulk_insert(db, [LogEvent(service="s", level="INFO", message="m", created_at=t)
                                         for t in stamps])
    target = DatabaseTarget(params={**direct_target(dl_pool).params, "user": app}, password=Secret(PASSWORD))
    from datalayer.pool import open_pool

    pool = open_pool(settings_for_tests(pool_min_size=1), target=target, wait=True)
    try:
        with connection(pool) as db:
            assert db.execute("SELECT current_user").fetchone() == (app,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("DELETE FROM system_log")
            result = cleanup_old_data(db, days=30)
            cutoff = datetime.fromisoformat(result["cutoff"])
            expected = sum(1 for t in stamps if t < cutoff)
            assert result["system_logs"] == expected and expected > result["partitions_dropped"] > 0
            left = db.execute("SELECT count(*) FROM system_log WHERE created_at < %s", (cutoff,)).fetchone()
            assert left == (0,)
            assert db.execute("SELECT count(*) FROM system_log").fetchone() == (len(stamps) - expected,)
    finally:
        pool.close()


def test_health_as_the_application_and_readonly_roles(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = names["app"], names["ro"]
    with connection(dl_pool) as db:
        create_roles(db, app_role=app, readonly_role=ro, app_password=PASSWORD, readonly_password=PASSWORD)
        db.execute("SELECT datalayer_ensure_log_partitions(3)")
    for role in (app, ro):
        target = DatabaseTarget(params={**direct_target(dl_pool).params, "user": role}, password=Secret(PASSWORD))
        report = check_database_health(target=target, settings=settings_for_tests())
        assert report["status"] == "healthy", (role, report)
        assert "none pending" in report["checks"]["migrations"]["detail"]
        from datalayer import migration_status  # `datalayer status` asks the same question

        assert all(s.applied and not s.changed for s in migration_status(target=target, settings=settings_for_tests()))


def test_health_says_how_to_grant(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    planter = names["planter"]
    with connection(dl_pool) as db:
        _login_role(db, planter)
    target = DatabaseTarget(params={**direct_target(dl_pool).params, "user": planter}, password=Secret(PASSWORD))
    report = check_database_health(target=target, settings=settings_for_tests())
    assert report["status"] == "unhealthy"
    assert "roles create" in report["checks"]["migrations"]["detail"]


def test_roles_create_refuses_while_another_role_can_create(names: dict[str, str], dl_pool: DataLayerPool) -> None:
    app, ro, other = names["app"], names["ro"], names["other"]
    with connection(dl_pool) as db:
        _login_role(db, other)
        db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(other)))
        with pytest.raises(DataLayerError, match=f'{other} can still create objects in schema "public"') as e:
            create_roles(db, app_role=app, readonly_role=ro)
        assert "REVOKE CREATE ON SCHEMA" in str(e.value)
        # nothing was changed: not even the roles were created
        assert db.execute("SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (app, ro)).fetchone() == (0,)
        db.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(other)))
        assert create_roles(db, app_role=app, readonly_role=ro) == {app: True, ro: True}


def test_roles_create_by_a_non_owner_of_the_schema_checks_its_revoke(names: dict[str, str],
                                                                     dl_pool: DataLayerPool) -> None:
    """A REVOKE by a role that does not own the schema only warns: the check after it must catch that."""
    app, ro, owner = names["app"], names["ro"], names["other"]
    with connection(dl_pool) as db:
        _login_role(db, owner)
        db.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(owner)))
        db.execute(sql.SQL("ALTER TABLE system_log OWNER TO {}").format(sql.Identifier(owner)))
        db.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    with _connect(dl_pool, owner) as c, pytest.raises(DataLayerError, match=r"PUBLIC \(every role\) can still create"):
        create_roles(c, app_role=app, readonly_role=ro)
    # and a role that owns nothing is told whom to run as
    with connection(dl_pool) as db:
        db.execute(sql.SQL("ALTER TABLE system_log OWNER TO {}").format(sql.Identifier(
            db.execute("SELECT current_user").fetchone()[0])))
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with _connect(dl_pool, owner) as c, pytest.raises(ConfigError, match="must run as the owner"):
        create_roles(c, app_role=app, readonly_role=ro)


def test_functions_are_bound_to_the_schema_the_migrations_ran_in(names: dict[str, str],
                                                                 datalayer_server: TestServer) -> None:
    """A service migrating into a schema of its own: nothing in the functions says `public`."""
    from datalayer.migrate import setup_database

    dbname = f"dl_schema_{os.getpid()}_{next(_n)}"
    janitor = datalayer_server.janitor(dbname)
    janitor.drop()
    with janitor:
        target = datalayer_server.target_for(dbname)
        with psycopg.connect(target.conninfo(), autocommit=True) as c:
            c.execute("CREATE SCHEMA svc")
            c.execute(sql.SQL("ALTER DATABASE {} SET search_path = svc").format(sql.Identifier(dbname)))
        setup_database(target=target, settings=settings_for_tests())
        with psycopg.connect(target.conninfo(), autocommit=True) as c:
            assert c.execute("SELECT to_regclass('public.system_log')").fetchone() == (None,)
            bodies = c.execute("SELECT p.proname::text, pg_get_functiondef(p.oid) FROM pg_proc p "
                               "WHERE p.pronamespace = 'svc'::regnamespace AND p.prosecdef").fetchall()
            assert {b[0] for b in bodies} >= {"datalayer_ensure_log_partition", "datalayer_drop_log_partitions",
                                              "datalayer_delete_old_logs", "datalayer_ensure_log_partitions"}
            for name, body in bodies:
                assert "public" not in body, name
                assert "search_path TO 'pg_catalog', 'pg_temp'" in body, name
            # called from a session whose search_path does not even hold the schema
            c.execute("SET search_path = public")
            day = _days_ago(50)
            assert c.execute("SELECT svc.datalayer_ensure_log_partition(%s)", (day,)).fetchone() == (True,)
            assert c.execute("SELECT to_regclass(%s)", (f"svc.system_log_p{day:%Y%m%d}",)).fetchone() != (None,)
            dropped = c.execute("SELECT partition_name FROM svc.datalayer_drop_log_partitions(now() - interval '40 days')"
                                ).fetchall()
            assert dropped == [(f"system_log_p{day:%Y%m%d}",)]
            # roles create grants on the schema it finds the tables in
            c.execute("SET search_path = svc")
            create_roles(c, app_role=names["app"], readonly_role=names["ro"])
            assert c.execute("SELECT has_schema_privilege(%s, 'svc', 'USAGE'), has_table_privilege(%s, "
                             "'svc.system_log', 'INSERT')", (names["app"], names["app"])).fetchone() == (True, True)


def test_roles_create_before_migrate_says_so(names: dict[str, str], datalayer_server: TestServer) -> None:
    from datalayer.errors import MigrationError

    dbname = f"dl_empty_{os.getpid()}_{next(_n)}"
    janitor = datalayer_server.janitor(dbname)
    janitor.drop()
    with janitor, psycopg.connect(datalayer_server.target_for(dbname).conninfo(), autocommit=True) as c:
        with pytest.raises(MigrationError, match="run datalayer migrate first"):
            create_roles(c, app_role=names["app"], readonly_role=names["ro"])
        assert c.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (names["app"],)).fetchone() == (0,)


def test_roles_create_refuses_roles_that_hold_more_than_it_grants(names: dict[str, str],
                                                                  dl_pool: DataLayerPool) -> None:
    """Naming the owner, the caller, a superuser or PostgreSQL's own roles would cut or hand on rights."""
    app, ro, other = names["app"], names["ro"], names["other"]
    with connection(dl_pool) as db:
        owner = db.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        _login_role(db, other)
        db.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(other)))
        grants_before = db.execute("SELECT relacl::text FROM pg_class WHERE relname = 'users'").fetchone()
        for bad in (owner, other, "pg_monitor"):
            with pytest.raises(ValidationError, match="app_role"):
                create_roles(db, app_role=bad, readonly_role=ro, app_password=PASSWORD)
            with pytest.raises(ValidationError, match="readonly_role"):
                create_roles(db, app_role=app, readonly_role=bad)
        # nothing was changed: no role made, no grant cut, no password set
        assert db.execute("SELECT count(*) FROM pg_roles WHERE rolname IN (%s, %s)", (app, ro)).fetchone() == (0,)
        assert db.execute("SELECT relacl::text FROM pg_class WHERE relname = 'users'").fetchone() == grants_before
