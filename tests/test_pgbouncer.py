"""datalayer behind PgBouncer in transaction pooling mode (a PgBouncer of this module's own, on loopback).

The module's bouncer keeps ONE server connection per database and user, so that every client shares it:
what one client leaves in the session is what the next one sees.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from datalayer import sql as dl_sql
from datalayer import transaction
from datalayer.config import DatabaseTarget, Secret, Settings
from datalayer.errors import ConfigError, QueryError
from datalayer.health import check_database_health
from datalayer.migrate import migration_status, setup_database
from datalayer.pool import DataLayerPool, connect_kwargs, connection, open_pool
from datalayer.roles import create_roles
from datalayer.testing import PgBouncer, TestServer, fresh_database, settings_for_tests
from datalayer.transactions import run_in_transaction

pytestmark = pytest.mark.skipif(
    shutil.which("pgbouncer", path=os.environ.get("PATH", "") + ":/usr/sbin") is None,
    reason="pgbouncer is not installed (Debian: apt-get install pgbouncer)",
)

# The pools' settings (SET LOCAL in transactions) and the bouncer's connect_query differ, so that each
# SHOW says where its value came from.
POOLED = {"statement_timeout": "7s", "lock_timeout": "3s", "idle_in_transaction_timeout": "45s"}
CONNECT_QUERY = {
    "TimeZone": "UTC",
    "statement_timeout": "11s",
    "lock_timeout": "4s",
    "idle_in_transaction_session_timeout": "50s",
}
_n = itertools.count(1)


def _home() -> Path:
    home = Path(os.environ.get("DATALAYER_TEST_HOME") or Path(tempfile.gettempdir()) / "datalayer-tests")
    home.mkdir(parents=True, exist_ok=True)
    return home


@pytest.fixture(scope="module")
def bouncer(datalayer_server: TestServer) -> Iterator[PgBouncer]:
    directory = Path(tempfile.mkdtemp(prefix="pgb-test-", dir=_home()))
    b = PgBouncer(directory, datalayer_server.target, session=CONNECT_QUERY, pool_size=1)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _settings(server: TestServer, dbname: str, **overrides: object) -> Settings:
    return settings_for_tests(pooler="transaction", direct=server.target_for(dbname), **{**POOLED, **overrides})


@pytest.fixture
def bpool(bouncer: PgBouncer, dl_pool: DataLayerPool, datalayer_server: TestServer) -> Iterator[DataLayerPool]:
    """A pool on this test's fresh database, through the module's bouncer."""
    name = dl_pool.target.params["dbname"]
    pool = open_pool(_settings(datalayer_server, name), target=bouncer.target_for(name), wait=True)
    try:
        yield pool
    finally:
        pool.close()


def _show(db: psycopg.Connection[object], name: str) -> str:
    row = db.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
    assert row is not None
    return str(row[0])


def test_statement_timeout_through_the_bouncer(bpool: DataLayerPool) -> None:
    with connection(bpool) as db:
        with transaction(db):  # SET LOCAL from the pool's settings
            assert _show(db, "statement_timeout") == "7s"
            assert _show(db, "lock_timeout") == "3s"
            assert _show(db, "idle_in_transaction_session_timeout") == "45s"
            assert _show(db, "TimeZone") == "UTC"
        # autocommit: the server connection's own settings (connect_query), not a leftover of the block
        assert _show(db, "statement_timeout") == "11s"
        assert _show(db, "lock_timeout") == "4s"


def test_options_are_not_sent(bouncer: PgBouncer, bpool: DataLayerPool) -> None:
    # The bouncer has no ignore_startup_parameters: a client sending options is refused ...
    name = bpool.target.params["dbname"]
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(bouncer.target_for(name).conninfo(), options="-c statement_timeout=1s").close()
    # ... and the pool, which opened, sends none.
    assert "options" not in connect_kwargs(bpool.settings)
    assert "options" in connect_kwargs(settings_for_tests())
    with connection(bpool) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


def test_prepared_statement_path_across_many_clients(bouncer: PgBouncer, bpool: DataLayerPool) -> None:
    name = bpool.target.params["dbname"]
    # psycopg's default (prepare after 5 runs) on two clients of the one server connection fails ...
    a = psycopg.connect(bouncer.target_for(name).conninfo(), autocommit=True)
    b = psycopg.connect(bouncer.target_for(name).conninfo(), autocommit=True)
    try:
        a.execute("SELECT 1", prepare=True)
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            b.execute("SELECT 2", prepare=True)
    finally:
        a.close()
        b.close()
    # ... while datalayer's pools, many clients each running one query far past the threshold, do not.
    errors: list[BaseException] = []
    results: list[int] = []

    def work(k: int) -> None:
        try:
            with connection(bpool) as db:
                for i in range(30):
                    row = db.execute("SELECT %s::int + 1", (i * 100 + k,)).fetchone()
                    assert row is not None
                    results.append(row[0])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(bpool.max_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results) == sorted(i * 100 + k + 1 for i in range(30) for k in range(bpool.max_size))


def test_set_local_does_not_leak_to_another_client(
    bouncer: PgBouncer, bpool: DataLayerPool, datalayer_server: TestServer
) -> None:
    name = bpool.target.params["dbname"]
    other = open_pool(
        _settings(datalayer_server, name, statement_timeout="9s"), target=bouncer.target_for(name), wait=True
    )
    try:
        with connection(bpool) as a, connection(other) as b:
            with transaction(a):
                assert _show(a, "statement_timeout") == "7s"
                pid_a = a.execute("SELECT pg_backend_pid()").fetchone()
            with transaction(b):
                assert _show(b, "statement_timeout") == "9s"
            # one server connection (pool_size=1): the next client's autocommit read sees neither SET LOCAL
            assert b.execute("SELECT pg_backend_pid()").fetchone() == pid_a
            assert _show(b, "statement_timeout") == "11s"
    finally:
        other.close()


def test_serializable_transaction_behind_the_bouncer(bpool: DataLayerPool) -> None:
    # SET TRANSACTION must come before any query: the SET LOCAL a transaction begins with is not one.
    with connection(bpool) as db:
        level = run_in_transaction(db, lambda d: _show(d, "transaction_isolation"), isolation="serializable")
        assert level == "serializable"


def test_returning_a_used_connection_keeps_other_clients_locks(bouncer: PgBouncer, bpool: DataLayerPool) -> None:
    name = bpool.target.params["dbname"]
    direct = psycopg.connect(bpool.settings.direct.conninfo() if bpool.settings.direct else "", autocommit=True)
    raw = psycopg.connect(bouncer.target_for(name).conninfo(), autocommit=True, prepare_threshold=None)
    key = 0x70676200 + next(_n)
    try:
        # Another client's session lock on the shared server connection (the very thing a transaction
        # pooler cannot keep safely; here it stands for any session state that is not ours).
        raw.execute("SELECT pg_advisory_lock(%s)", (key,))
        with connection(bpool) as db:
            db.execute("SELECT 1")  # a raw execute marks the connection for a session reset on return
        held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted"
        row = direct.execute(held, (key,)).fetchone()
        assert row == (1,), "returning a connection released another client's advisory lock"
        assert _show(raw, "statement_timeout") == "11s"  # no RESET ALL undid connect_query
    finally:
        raw.execute("SELECT pg_advisory_unlock_all()")
        raw.close()
        direct.close()


def test_migrations_go_to_the_direct_url(
    bouncer: PgBouncer, dl_empty_target: DatabaseTarget, datalayer_server: TestServer
) -> None:
    name = dl_empty_target.params["dbname"]
    through = bouncer.target_for(name)
    without = settings_for_tests(pooler="transaction")
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL") as e:
        setup_database(settings=without, target=through, project=datalayer_server.project)
    assert e.value.variable == "DATABASE_DIRECT_URL"
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL"):
        migration_status(settings=without, target=through, project=datalayer_server.project)
    settings = settings_for_tests(pooler="transaction", direct=dl_empty_target)
    # Through the bouncer the migrator's options would be refused: applying proves it went direct.
    applied = setup_database(settings=settings, target=through, project=datalayer_server.project)
    assert applied
    assert all(s.applied for s in migration_status(settings=settings, target=through, project=datalayer_server.project))
    pool = open_pool(settings, target=through, wait=True)
    try:
        with connection(pool) as db:
            assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
    finally:
        pool.close()


def test_health_through_the_bouncer(bouncer: PgBouncer, bpool: DataLayerPool, datalayer_server: TestServer) -> None:
    name = bpool.target.params["dbname"]
    report = check_database_health(
        settings=bpool.settings, target=bouncer.target_for(name), project=datalayer_server.project
    )
    assert report["checks"]["connect"]["ok"], report
    assert report["checks"]["migrations"]["ok"], report


def test_clone_and_drop_while_the_bouncer_holds_server_connections(
    bouncer: PgBouncer, datalayer_server: TestServer
) -> None:
    own = datalayer_server.bouncer is None
    if own:
        datalayer_server.bouncer = bouncer
    active = datalayer_server.bouncer
    assert active is not None
    try:
        with fresh_database(datalayer_server) as pool:
            name = pool.target.params["dbname"]
            assert pool.target.params["port"] == str(active.port)
            with connection(pool) as db, transaction(db):
                db.execute("SELECT 1")
            pools = [r for r in active.admin("SHOW POOLS") if r["database"] == name]
            assert pools and pools[0]["sv_idle"] + pools[0]["sv_used"] >= 1, pools
        # the pool was closed with the bouncer still holding its server connection: the clone was dropped
        with psycopg.connect(datalayer_server.target.conninfo(), autocommit=True) as admin:
            assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None
        with fresh_database(datalayer_server) as pool, connection(pool) as db:  # the next clone works too
            assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
    finally:
        if own:
            datalayer_server.bouncer = None


def test_roles_create_gives_autocommit_reads_the_settings(datalayer_server: TestServer) -> None:
    n = next(_n)
    app, ro = f"dl_pgb_app_{os.getpid()}_{n}", f"dl_pgb_ro_{os.getpid()}_{n}"
    password = "Role-Pw-For-Tests-1"
    settings = settings_for_tests(**POOLED)
    directory = Path(tempfile.mkdtemp(prefix="pgb-roles-", dir=_home()))
    try:
        with fresh_database(datalayer_server) as pool:
            name = pool.target.params["dbname"]
            with psycopg.connect(datalayer_server.target_for(name).conninfo(), autocommit=True) as owner:
                for _ in range(2):  # idempotent
                    create_roles(
                        owner,
                        app_role=app,
                        readonly_role=ro,
                        app_password=password,
                        readonly_password=password,
                        settings=settings,
                    )
            # A bouncer without connect_query: the role's settings are all the session gets.
            server = DatabaseTarget(params={**datalayer_server.target.params, "user": app}, password=Secret(password))
            b = PgBouncer(directory, server, users={ro: password})
            b.start()
            try:
                for role in (app, ro):
                    rpool = open_pool(
                        _settings(datalayer_server, name, statement_timeout="30s"),
                        target=b.target_for(name, role),
                        wait=True,
                    )
                    try:
                        with connection(rpool) as db:
                            assert db.execute("SELECT current_user").fetchone() == (role,)
                            assert _show(db, "statement_timeout") == "7s"
                            assert _show(db, "lock_timeout") == "3s"
                            assert _show(db, "idle_in_transaction_session_timeout") == "45s"
                            assert _show(db, "TimeZone") == "UTC"
                            with transaction(db):
                                assert _show(db, "statement_timeout") == "30s"
                    finally:
                        rpool.close()
            finally:
                b.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        with psycopg.connect(datalayer_server.target.conninfo(), autocommit=True) as admin:
            for role in (app, ro):
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_plugin_runs_the_session_through_the_bouncer(datalayer_server: TestServer, dl_pool: DataLayerPool) -> None:
    if datalayer_server.bouncer is None:
        pytest.skip("TEST_PGBOUNCER is not set: this session's pools go to the server directly")
    assert dl_pool.target.params["port"] == str(datalayer_server.bouncer.port)
    assert dl_pool.settings.pooler == "transaction"
    assert dl_pool.settings.direct is not None
    with connection(dl_pool) as db:
        with transaction(db):
            assert _show(db, "statement_timeout") == "1min"  # settings_for_tests(): SET LOCAL
        assert _show(db, "statement_timeout") == "1min"  # the session bouncer's connect_query


# -- settings --

URL = "postgresql://app@127.0.0.1:6432/app"
DIRECT = "postgresql://app@127.0.0.1:5432/app"


def test_settings_read_the_pooler_and_the_direct_url() -> None:
    s = Settings.from_env({"DATABASE_URL": URL, "DATABASE_POOLER": " Transaction ", "DATABASE_DIRECT_URL": DIRECT})
    assert s.pooler == "transaction"
    assert s.direct is not None and s.direct.params["port"] == "5432"
    assert s.direct_target(s.database) == s.direct  # type: ignore[arg-type]
    plain = Settings.from_env({"DATABASE_URL": URL})
    assert plain.pooler == "none" and plain.direct is None
    assert plain.direct_target(plain.database) == plain.database  # type: ignore[arg-type]
    assert "s3cret" not in repr(
        Settings.from_env({"DATABASE_URL": URL, "DATABASE_DIRECT_URL": DIRECT.replace("app@", "app:s3cret@")})
    )


@pytest.mark.parametrize(
    ("env", "variable", "words"),
    [
        ({"DATABASE_URL": URL, "DATABASE_POOLER": "session"}, "DATABASE_POOLER", "leave DATABASE_POOLER unset"),
        ({"DATABASE_URL": URL, "DATABASE_POOLER": "bouncer"}, "DATABASE_POOLER", "'none' or 'transaction'"),
        (
            {"DATABASE_URL": URL, "DATABASE_POOLER": "transaction", "DATABASE_DIRECT_URL": URL},
            "DATABASE_DIRECT_URL",
            "must be the PostgreSQL server itself",
        ),
        (
            {
                "DATABASE_URL": "postgresql://app@127.0.0.1/app",
                "DATABASE_POOLER": "transaction",
                "DATABASE_DIRECT_URL": "postgresql://other@127.0.0.1:5432/app",
            },
            "DATABASE_DIRECT_URL",
            "host, port and database",
        ),
        ({"DATABASE_POOLER": "transaction"}, "DATABASE_POOLER", "needs DATABASE_URL"),
        ({"DATABASE_DIRECT_URL": DIRECT}, "DATABASE_DIRECT_URL", "without DATABASE_URL"),
        ({"DATABASE_URL": URL, "DATABASE_DIRECT_URL": "mysql://x@h/db"}, "DATABASE_DIRECT_URL", "DATABASE_DIRECT_URL"),
        (
            {"DATABASE_URL": URL, "DATABASE_DIRECT_URL": DIRECT + "?options=-c%20x%3D1"},
            "DATABASE_DIRECT_URL",
            "options",
        ),
        (
            {"DATABASE_URL": URL, "DATABASE_DIRECT_URL": DIRECT + "?nonsense=1"},
            "DATABASE_DIRECT_URL",
            "parameter names",
        ),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], variable: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert e.value.variable == variable
    assert words in str(e.value)


def test_direct_target_refuses_without_a_direct_url() -> None:
    s = Settings.from_env({"DATABASE_URL": URL, "DATABASE_POOLER": "transaction"})
    assert s.database is not None
    with pytest.raises(ConfigError, match="set DATABASE_DIRECT_URL") as e:
        s.direct_target(s.database)
    assert e.value.variable == "DATABASE_DIRECT_URL"
    with pytest.raises(ConfigError) as e2:
        Settings(pooler="session")  # type: ignore[arg-type]
    assert e2.value.variable == "DATABASE_POOLER"


def test_the_pooler_settings_belong_to_the_database_group_of_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A .env's pooler settings must not pair with a DATABASE_URL the environment chose.
    (tmp_path / ".env").write_text(f"DATABASE_POOLER=transaction\nDATABASE_DIRECT_URL={DIRECT}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATALAYER_DOTENV", "1")
    monkeypatch.setenv("DATABASE_URL", URL)
    s = Settings.from_env()
    assert s.pooler == "none" and s.direct is None


# -- the direct URL must reach the server, the same database, and the pooled sessions must hold the settings --


@pytest.fixture(scope="module")
def lax_bouncer(datalayer_server: TestServer) -> Iterator[PgBouncer]:
    """A bouncer that silently drops ``options`` (ignore_startup_parameters = options)."""
    directory = Path(tempfile.mkdtemp(prefix="pgb-lax-", dir=_home()))
    b = PgBouncer(
        directory, datalayer_server.target, session=CONNECT_QUERY, ignore_startup_parameters="options", pool_size=1
    )
    b.start()
    try:
        yield b
    finally:
        b.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _has_users(server: TestServer, name: str) -> bool:
    with psycopg.connect(server.target_for(name).conninfo(), autocommit=True) as db:
        row = db.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()
        return bool(row and row[0])


def test_a_direct_url_at_a_pooler_is_refused(
    bouncer: PgBouncer, lax_bouncer: PgBouncer, dl_empty_target: DatabaseTarget, datalayer_server: TestServer
) -> None:
    name = dl_empty_target.params["dbname"]
    through = bouncer.target_for(name)
    # A pooler that drops options (its shared session would make the advisory lock not exclusive) and one
    # that refuses them: both are refused before anything is migrated.
    for pooler in (lax_bouncer, bouncer):
        settings = settings_for_tests(pooler="transaction", direct=pooler.target_for(name))
        with pytest.raises(ConfigError, match="reaches a pooler, not the PostgreSQL server") as e:
            setup_database(settings=settings, target=through, project=datalayer_server.project)
        assert e.value.variable == "DATABASE_DIRECT_URL"
        with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL"):
            migration_status(settings=settings, target=through, project=datalayer_server.project)
        report = check_database_health(settings=settings, target=through, project=datalayer_server.project)
        assert not report["checks"]["direct"]["ok"], report
        assert "reaches a pooler" in report["checks"]["direct"]["detail"]
    # Without DATABASE_POOLER the main target is migrated directly: a pooler there is named too.
    with pytest.raises(ConfigError, match="set DATABASE_POOLER=transaction") as e2:
        setup_database(
            settings=settings_for_tests(), target=lax_bouncer.target_for(name), project=datalayer_server.project
        )
    assert e2.value.variable == "DATABASE_URL"
    assert not _has_users(datalayer_server, name)


def test_a_direct_url_at_another_database_is_refused(
    bouncer: PgBouncer, bpool: DataLayerPool, dl_empty_target: DatabaseTarget, datalayer_server: TestServer
) -> None:
    empty = dl_empty_target.params["dbname"]
    migrated = bpool.target.params["dbname"]
    settings = settings_for_tests(pooler="transaction", direct=datalayer_server.target_for(migrated), **POOLED)
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL reaches another database than DATABASE_URL") as e:
        setup_database(settings=settings, target=bouncer.target_for(empty), project=datalayer_server.project)
    assert e.value.variable == "DATABASE_DIRECT_URL"
    assert empty in str(e.value) and migrated in str(e.value)
    report = check_database_health(
        settings=settings, target=bouncer.target_for(empty), project=datalayer_server.project
    )
    assert not report["checks"]["direct"]["ok"], report
    assert "another database" in report["checks"]["direct"]["detail"]
    good = check_database_health(
        settings=bpool.settings, target=bouncer.target_for(migrated), project=datalayer_server.project
    )
    assert good["checks"]["direct"]["ok"], good


def test_health_reports_pooled_sessions_without_the_settings(
    bouncer: PgBouncer, bpool: DataLayerPool, datalayer_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = bpool.target.params["dbname"]
    # connect_query gives 11s, the settings say 7s: autocommit reads would run with the bouncer's value.
    report = check_database_health(
        settings=bpool.settings, target=bouncer.target_for(name), project=datalayer_server.project
    )
    check = report["checks"]["session_settings"]
    assert not check["ok"] and report["status"] == "unhealthy", report
    assert "statement_timeout=11s (want 7s)" in check["detail"]
    assert "datalayer roles create" in check["detail"]
    same = _settings(
        datalayer_server,
        name,
        statement_timeout="11s",
        lock_timeout="4s",
        idle_in_transaction_timeout="50s",
    )
    ok = check_database_health(settings=same, target=bouncer.target_for(name), project=datalayer_server.project)
    assert ok["checks"]["session_settings"]["ok"], ok
    with caplog.at_level("WARNING", logger="datalayer"):
        open_pool(bpool.settings, target=bouncer.target_for(name), wait=True).close()
    drifts = [r for r in caplog.records if "statement_timeout=11s (want 7s)" in r.getMessage()]
    assert len(drifts) == 1, caplog.records
    caplog.clear()
    with caplog.at_level("WARNING", logger="datalayer"):
        open_pool(same, target=bouncer.target_for(name), wait=True).close()
    assert not [r for r in caplog.records if "instead of the settings" in r.getMessage()]


def test_health_keeps_its_timeout_behind_the_bouncer(
    bouncer: PgBouncer, bpool: DataLayerPool, datalayer_server: TestServer
) -> None:
    name = bpool.target.params["dbname"]
    with psycopg.connect(datalayer_server.target_for(name).conninfo()) as locker:
        locker.execute("LOCK TABLE _yoyo_migration IN ACCESS EXCLUSIVE MODE")
        # The bouncer's sessions have lock_timeout 4s and statement_timeout 11s: the check's own bound
        # (1 s) must be what ends it.
        report = check_database_health(
            settings=bpool.settings, target=bouncer.target_for(name), project=datalayer_server.project, timeout=1
        )
        locker.rollback()
    check = report["checks"]["migrations"]
    assert not check["ok"], report
    assert "statement timeout" in check["detail"], check


def test_a_pooler_without_the_pooler_setting_is_named(bouncer: PgBouncer, bpool: DataLayerPool) -> None:
    name = bpool.target.params["dbname"]
    with pytest.raises(ConfigError, match="set DATABASE_POOLER=transaction") as e:
        open_pool(settings_for_tests(), target=bouncer.target_for(name))
    assert e.value.variable == "DATABASE_POOLER"


def test_prepared_statement_errors_name_the_pooler_setting(
    lax_bouncer: PgBouncer, dl_pool: DataLayerPool, tmp_path: Path
) -> None:
    # A bouncer that drops options lets a pool without DATABASE_POOLER open; its prepared statements then
    # meet another client's on the one server connection.
    (tmp_path / "q.sql").write_text(
        "-- name: plus :scalar\nSELECT :n::int + 1\n\n-- name: minus :scalar\nSELECT :n::int - 1\n"
    )
    queries = dl_sql.load(tmp_path / "q.sql")
    plus, minus = queries.bind("plus", int), queries.bind("minus", int)
    pool = open_pool(settings_for_tests(), target=lax_bouncer.target_for(dl_pool.target.params["dbname"]), wait=True)
    try:
        with connection(pool) as a, connection(pool) as b:
            for i in range(8):
                assert plus.scalar(a, n=i) == i + 1
            with pytest.raises(QueryError, match="set DATABASE_POOLER=transaction") as e:
                for i in range(8):
                    minus.scalar(b, n=i)
            assert e.value.sqlstate in ("42P05", "26000")
    finally:
        pool.close()


def test_check_works_on_the_direct_server(
    bouncer: PgBouncer, dl_empty_target: DatabaseTarget, datalayer_server: TestServer
) -> None:
    from datalayer.contracts import check_scratch

    name = dl_empty_target.params["dbname"]
    settings = settings_for_tests(
        database=bouncer.target_for(name), pooler="transaction", direct=datalayer_server.target_for(name)
    )
    findings = check_scratch(settings, project=datalayer_server.project)
    assert isinstance(findings, list)
    # the scratch database was migrated, not the one DATABASE_DIRECT_URL names
    assert not _has_users(datalayer_server, name)
