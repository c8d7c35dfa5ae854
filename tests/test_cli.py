"""The command line mirrors the library: every command against a real database, and against none."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, run_py, url_of

from datalayer.cli import build_parser
from datalayer.config import Secret, Settings
from datalayer.partitions import MAX_AHEAD, partition_name
from datalayer.pool import DataLayerPool
from datalayer.testing import TestServer


def _cli(args: list[str], env: dict[str, str], timeout: float = 180) -> Any:
    return run_py(f"import sys\nfrom datalayer.cli import main\nsys.exit(main({args!r}))", env, timeout=timeout)


def _env(pool: DataLayerPool) -> dict[str, str]:
    return clean_env(DATABASE_URL=url_of(pool.target))


def test_status_health_plan_stats(dl_pool: DataLayerPool) -> None:
    env = _env(dl_pool)
    status = _cli(["status", "--json"], env)
    assert status.returncode == 0, status.stderr
    ids = [m["id"] for m in json.loads(status.stdout)]
    assert ids[:3] == ["0001.core-tables", "0002.system-log", "0003.cache-entries"]
    assert all(m["applied"] for m in json.loads(status.stdout))
    health = _cli(["health", "--json"], env)
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "healthy"
    plan = _cli(["plan", "--sql"], env)
    assert (
        plan.returncode == 0 and "-- migration" not in plan.stdout and "datalayer_ensure_log_partition" in plan.stdout
    )
    stats = _cli(["stats", "--json"], env)
    assert stats.returncode == 0 and json.loads(stats.stdout)["users"] == 0


def test_partitions_maintain_reports_what_it_did(dl_pool: DataLayerPool) -> None:
    env = _env(dl_pool)
    today = datetime.now(UTC).date()
    last = max(row[0] for row in _partition_days(dl_pool))
    ahead = (last - today).days + 2  # two days beyond what migrate made
    first = _cli(["partitions", "maintain", "--ahead", str(ahead)], env)
    assert first.returncode == 0, first.stderr
    horizon = today + timedelta(days=ahead)
    assert f"created 2 day partition(s); every day from today through {horizon} has its partition" in first.stdout
    assert "system_log_default" in first.stdout and "(estimate)" in first.stdout
    again = _cli(["partitions", "maintain", "--ahead", str(ahead)], env)
    assert (
        again.returncode == 0 and f"created 0 day partition(s); every day from today through {horizon}" in again.stdout
    )
    # a gap is not hidden by the partitions further ahead
    with dl_pool.connection() as db:
        db.execute(f"DROP TABLE {partition_name(today + timedelta(days=1))}")
    gap = _cli(["partitions", "maintain", "--ahead", "0"], env)
    assert f"created 0 day partition(s); every day from today through {today} has its partition" in gap.stdout


def _partition_days(pool: DataLayerPool) -> list[Any]:
    from datalayer.pool import connection

    with connection(pool) as db:
        return db.execute(
            "SELECT to_date(substr(c.relname, 13), 'YYYYMMDD') FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = 'system_log'::regclass AND c.relname ~ '^system_log_p[0-9]{8}$'"
        ).fetchall()


def test_stats_labels_estimates_and_shows_exact_counts(dl_pool: DataLayerPool) -> None:
    from factories import user

    from datalayer.pool import connection

    with connection(dl_pool) as db:
        for _ in range(3):
            user(db)
    human = _cli(["stats"], _env(dl_pool))
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == "exact counts:" and "users 3;" in lines[1]
    tables = lines.index(next(ln for ln in lines if ln.startswith("tables")))
    users_row = next(ln for ln in lines[tables:] if ln.strip().startswith("users "))
    # The planner has not analysed the table: its 0 is shown, as an estimate, never as a count.
    assert "~" in users_row and "(estimate)" in users_row
    assert "planner's estimate" in human.stdout


def test_backup_restore_cleanup(dl_pool: DataLayerPool, tmp_path: Path) -> None:
    from datalayer import user_repo
    from datalayer.pool import connection

    with connection(dl_pool) as db:
        user_repo.create(db, username="cli_user", email="cli@example.com", hashed_password="h")
    env = _env(dl_pool)
    backup = _cli(["backup", str(tmp_path / "b.json")], env)
    assert backup.returncode == 0, backup.stderr
    assert "users" in backup.stderr and "backup written" in backup.stdout  # progress, then the result
    refused = _cli(["restore", str(tmp_path / "b.json")], env)
    assert refused.returncode == 1 and "BackupError" in refused.stderr and "empty tables" in refused.stderr
    cleanup = _cli(["cleanup", "--days", "30"], env)
    assert cleanup.returncode == 0 and "removed 0 log rows" in cleanup.stdout
    reset = _cli(["reset"], env)
    assert reset.returncode == 2 and "--yes" in reset.stderr
    assert _cli(["reset", "--yes"], env).returncode == 0
    restored = _cli(["restore", str(tmp_path / "b.json")], env)
    assert restored.returncode == 0, restored.stderr
    assert "users 1" in restored.stdout


def test_errors_are_one_line_not_tracebacks(tmp_path: Path) -> None:
    r = _cli(["status"], clean_env(DATABASE_URL="mysql://x/y"))
    assert r.returncode == 1 and "ConfigError" in r.stderr and "Traceback" not in r.stderr
    health = _cli(["health"], clean_env(DATABASE_URL="mysql://x/y"))  # health reports, never raises
    assert health.returncode == 1 and "unhealthy" in health.stdout and "DATABASE_URL" in health.stdout


# -- every command, against a missing database and a dead server ----------------------------------

# One invocation per command; a command added to the parser without one here fails the test below.
INVOCATIONS: dict[str, list[str]] = {
    "migrate": ["migrate"],
    "status": ["status"],
    "plan": ["plan", "--sql"],
    "health": ["health"],
    "check": ["check"],
    "lint-migrations": ["lint-migrations"],
    "demo": ["demo"],
    "stats": ["stats"],
    "cleanup": ["cleanup", "--days", "30"],
    "backup": ["backup", "{tmp}/b.json"],
    "restore": ["restore", "{tmp}/missing.json"],
    "cache": ["cache", "stats"],
    "roles": ["roles", "create"],
    "reset": ["reset", "--yes"],
    "partitions": ["partitions", "maintain"],
    "path": ["path", "migrations"],
}
OFFLINE = {"lint-migrations", "path"}  # need no server: must simply work


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _run_all(env: dict[str, str], tmp: Path) -> dict[str, Any]:
    assert set(INVOCATIONS) == set(_subcommands()), "give every command an invocation here"
    jobs = {name: [a.replace("{tmp}", str(tmp)) for a in args] for name, args in INVOCATIONS.items()}
    jobs["cache flush"] = ["cache", "flush", "--prefix", f"clitest{os.getpid()}:"]
    with ThreadPoolExecutor(3) as ex:
        futures = {name: ex.submit(_cli, args, env, 120) for name, args in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def _assert_clean_failures(results: dict[str, Any], *, mentions: str) -> None:
    for name, r in results.items():
        out = r.stdout + r.stderr
        assert "Traceback" not in out, f"{name}: {out}"
        if name in OFFLINE:
            continue
        assert r.returncode not in (0, 70), f"{name} exited {r.returncode}: {out}"
        if name not in ("health", "cache", "cache flush"):  # health and cache report; the rest say why they stop
            last = r.stderr.strip().splitlines()[-1]
            assert last.startswith("datalayer: "), f"{name}: {r.stderr}"
            assert mentions in last, f"{name}: {last}"


def test_every_command_on_a_missing_database(datalayer_server: TestServer, tmp_path: Path) -> None:
    target = datalayer_server.target_for(f"dl_missing_{os.getpid()}")
    env = clean_env(DATABASE_URL=url_of(target), REDIS_URL="redis://127.0.0.1:1/0", CONNECT_TIMEOUT="2")
    results = _run_all(env, tmp_path)
    _assert_clean_failures(results, mentions=f"dl_missing_{os.getpid()}")
    assert "does not exist" in results["status"].stderr  # before the fix: a psycopg traceback


def test_every_command_on_a_dead_server(tmp_path: Path) -> None:
    env = clean_env(
        DATABASE_URL="postgresql://u@127.0.0.1:1/db", REDIS_URL="redis://127.0.0.1:1/0", CONNECT_TIMEOUT="2"
    )
    results = _run_all(env, tmp_path)
    _assert_clean_failures(results, mentions="127.0.0.1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "{tmp}/missing.json"], "cannot read the backup"),
        (["restore", "{tmp}"], "not a regular file"),
        (["backup", "{tmp}/no/such/dir/b.json"], "BackupError"),
        (["backup", "{tmp}"], "not a regular file"),
        (["cleanup", "--days", "0"], "ValidationError"),
        (["cache", "flush", "--prefix", "*"], "prefix"),
    ],
)
def test_bad_input_is_one_clear_line(dl_pool: DataLayerPool, tmp_path: Path, args: list[str], message: str) -> None:
    r = _cli([a.replace("{tmp}", str(tmp_path)) for a in args], _env(dl_pool))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("datalayer: ") and message in r.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (
        ["status", "--bogus"],
        ["cleanup", "--days", "x"],
        ["nope"],
        [],
        ["partitions", "maintain", "--ahead", "-1"],
        ["migrate", "--partitions-ahead", "100000"],
    ):
        r = _cli(args, clean_env(DATABASE_URL="postgresql://u@127.0.0.1:1/never-reached"))
        assert r.returncode == 2 and "usage: datalayer" in r.stderr and "Traceback" not in r.stderr, r.stderr
        if "ahead" in " ".join(args):  # refused before anything runs (migrate would apply, then refuse)
            assert f"from 0 to {MAX_AHEAD}" in r.stderr


def test_restore_into_an_unmigrated_database_says_migrate(
    datalayer_server: TestServer, dl_pool: DataLayerPool, tmp_path: Path
) -> None:
    assert _cli(["backup", str(tmp_path / "b.json")], _env(dl_pool)).returncode == 0
    name = f"dl_bare_cli_{os.getpid()}"
    janitor = datalayer_server.janitor(name)
    janitor.drop()
    with janitor:
        env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for(name)))
        r = _cli(["restore", str(tmp_path / "b.json")], env)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "not migrated" in r.stderr and "datalayer migrate" in r.stderr  # before: relation "users" does not exist
        stats = _cli(["stats"], env)
        assert stats.returncode == 1 and "datalayer migrate" in stats.stderr


def test_verbose_turns_on_datalayer_debug(dl_pool: DataLayerPool) -> None:
    quiet = _cli(["stats"], _env(dl_pool))
    loud = _cli(["-v", "stats"], _env(dl_pool))
    assert quiet.returncode == loud.returncode == 0
    assert "DEBUG" not in quiet.stderr
    assert (
        "DEBUG: datalayer: database postgresql://" in loud.stderr and "DEBUG: datalayer: running stats" in loud.stderr
    )
    assert "password" not in loud.stderr.replace("require_auth=!password", "")


def test_every_command_and_argument_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert all(a.help for a in parser._actions), "top-level arguments need help"
    for name, sub in _subcommands().items():
        assert sub.description and len(sub.description) > 20, f"{name} has no description"
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.dest} has no help"
    with pytest.raises(SystemExit):
        parser.parse_args(["backup", "--help"])
    text = capsys.readouterr().out
    assert "FILE" in text and "owner only" in text and "symbolic link" in text


def test_demo_first_run_reports_the_migrations_it_applied(tmp_path: Path) -> None:
    home = Path(os.environ["DATALAYER_TEST_HOME"]) / f"demo-{os.getpid()}"
    env = clean_env(DATALAYER_HOME=str(home))
    try:
        first = _cli(["demo"], env, timeout=300)
        assert first.returncode == 0, first.stderr
        assert "migrations: applied 0001.core-tables, 0002.system-log" in first.stdout, (
            first.stdout
        )  # before: up to date
        second = _cli(["demo"], env, timeout=300)
        assert second.returncode == 0 and "migrations: up to date (none pending)" in second.stdout
    finally:
        _stop_leftover_postgres(home / "pgdata")
        shutil.rmtree(home, ignore_errors=True)


def _stop_leftover_postgres(pgdata: Path) -> None:
    # The demo's server must stop with its process; if one is left, stop that one (ours), by its pid.
    pidfile = pgdata / "postmaster.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        pytest.fail(f"the embedded PostgreSQL of the demo (pid {pid}) outlived its process")


# -- the project: --project, DATALAYER_PROJECT, [tool.datalayer], and `datalayer path` ---------------------

SCRIPT = Path(sys.executable).parent / "datalayer"  # the installed console script
REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> Any:
    return subprocess.run(
        [str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def _service(tmp_path: Path, table: str = 'migrations = ["migrations"]\nbuiltin = false\n') -> Path:
    root = tmp_path / "notes-svc"
    (root / "migrations").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "notes-svc"\n\n[tool.datalayer]\n{table}')
    timeouts = "SET LOCAL lock_timeout = '10s';\nSET LOCAL statement_timeout = '10min';\n\n"
    (root / "migrations" / "0001.notes.sql").write_text(
        timeouts + "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);\n"
    )
    (root / "migrations" / "0001.notes.rollback.sql").write_text(timeouts + "DROP TABLE notes;\n")
    return root


def test_path_prints_the_builtin_folders_one_line_each(tmp_path: Path) -> None:
    env = clean_env()
    migrations = _run(["path", "migrations"], env, tmp_path)
    sql = _run(["path", "sql"], env, tmp_path)
    assert migrations.returncode == sql.returncode == 0, migrations.stderr + sql.stderr
    # A source checkout / editable install: the folders at the top of the checkout, whatever the cwd.
    assert migrations.stdout == f"{REPO / 'migrations'}\n" and sql.stdout == f"{REPO / 'sql'}\n"
    assert migrations.stderr == ""
    bad = _run(["path", "schemas"], env, tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_path_from_a_wheel_layout(tmp_path: Path) -> None:
    # An installed wheel: the package alone in site-packages, sql/ and migrations/ inside it as _data/.
    site = tmp_path / "site"
    shutil.copytree(REPO / "datalayer", site / "datalayer", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copytree(REPO / "migrations", site / "datalayer" / "_data" / "migrations")
    shutil.copytree(REPO / "sql", site / "datalayer" / "_data" / "sql")
    env = clean_env(PYTHONPATH=str(site))
    code = "import sys\nfrom datalayer.cli import main\nsys.exit(main(['path', sys.argv[1]]))"
    for what in ("migrations", "sql"):
        r = subprocess.run(
            [sys.executable, "-c", code, what],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"{site / 'datalayer' / '_data' / what}\n"


def test_project_option_goes_before_or_after_the_command() -> None:
    parser = build_parser()
    assert parser.parse_args(["status"]).project is None
    assert parser.parse_args(["--project", "a", "status"]).project == "a"
    assert parser.parse_args(["status", "--project", "b"]).project == "b"
    assert parser.parse_args(["--project", "a", "migrate", "--project", "b"]).project == "b"
    assert parser.parse_args(["--project", "a", "path", "sql"]).project == "a"


def test_a_wrong_project_fails_every_command_in_one_line(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL="postgresql://u@127.0.0.1:1/never-reached")
    missing = tmp_path / "missing"
    for args in (
        ["--project", str(missing), "path", "sql"],
        ["path", "sql", "--project", str(missing)],
        ["--project", str(missing), "status"],
    ):
        r = _run(args, env, tmp_path)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr == (
            f"datalayer: ConfigError: --project must be a project folder holding a pyproject.toml, "
            f"but {missing} does not exist; give the folder of the service's pyproject.toml\n"
        )
    r = _run(["status"], {**env, "DATALAYER_PROJECT": str(tmp_path)}, tmp_path)
    assert (
        r.returncode == 1
        and f"DATALAYER_PROJECT must be a project folder holding a pyproject.toml, but "
        f"{tmp_path} holds no pyproject.toml"
        in r.stderr
    )
    # A typo in the working directory's [tool.datalayer] stops even the commands that need no database.
    root = _service(tmp_path, 'migration = ["migrations"]\n')
    r = _run(["path", "migrations"], env, root / "migrations")
    assert r.returncode == 1 and r.stderr.startswith(
        f"datalayer: ConfigError: [tool.datalayer] migration in {root / 'pyproject.toml'} is not a setting; "
    ), r.stderr
    # --project wins over DATALAYER_PROJECT, which wins over the working directory.
    good = _service(tmp_path / "good")
    r = _run(["-v", "--project", str(good), "path", "sql"], {**env, "DATALAYER_PROJECT": str(missing)}, root)
    assert r.returncode == 0 and f"DEBUG: datalayer: project {good} ([tool.datalayer])" in r.stderr, r.stderr
    r = _run(["-v", "path", "sql"], {**env, "DATALAYER_PROJECT": str(good)}, root)
    assert r.returncode == 0 and f"DEBUG: datalayer: project {good} ([tool.datalayer])" in r.stderr, r.stderr


def test_project_file_problems_are_config_errors_not_internal_errors(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL="postgresql://u@127.0.0.1:1/never-reached")
    r = _run(["--project", "", "path", "sql"], env, tmp_path)  # not "the working directory"
    assert r.returncode == 1 and r.stderr == (
        "datalayer: ConfigError: --project needs a folder, got an empty value; give the folder of the service's "
        "pyproject.toml\n"
    ), r.stderr
    root = _service(tmp_path)
    (root / "pyproject.toml").write_bytes((root / "pyproject.toml").read_bytes() + b"\xff\xfe")
    for args, cwd in ((["path", "sql"], root / "migrations"), (["--project", str(root), "status"], tmp_path)):
        r = _run(args, env, cwd)
        assert r.returncode == 1 and r.stderr == (
            f"datalayer: ConfigError: cannot read {root / 'pyproject.toml'} (not UTF-8 text: byte 0xff on line 7); "
            "save it as UTF-8\n"
        ), r.stderr
    # No pyproject.toml from here up: the log names none (it used to name <cwd>/pyproject.toml).
    bare = tmp_path / "bare"
    bare.mkdir()
    assert not any((d / "pyproject.toml").exists() for d in (bare, *bare.parents))
    r = _run(["-v", "path", "sql"], env, bare)
    assert r.returncode == 0, r.stderr
    assert (
        f"DEBUG: datalayer: project {bare} (no pyproject.toml found from {bare} up: the built-in schema only)"
        in r.stderr
    ), r.stderr


def test_a_service_project_through_the_cli(datalayer_server: TestServer, tmp_path: Path) -> None:
    # A service with its own migrations and no built-in schema, run as cron or CI would run it.
    root = _service(tmp_path)
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    name = f"dl_b_service_{os.getpid()}"
    janitor = datalayer_server.janitor(name)
    janitor.drop()
    with janitor:
        env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for(name)))
        migrate = _run(["--project", str(root), "migrate"], env, elsewhere)
        assert migrate.returncode == 0, migrate.stderr
        assert migrate.stdout == "applied: 0001.notes\n"
        for args, cwd, extra in (
            (["status", "--json", "--project", str(root)], elsewhere, {}),
            (["status", "--json"], root / "migrations", {}),
            (["status", "--json"], elsewhere, {"DATALAYER_PROJECT": str(root)}),
        ):
            status = _run(args, {**env, **extra}, cwd)
            assert status.returncode == 0, status.stderr
            assert [(m["id"], m["applied"], m["changed"]) for m in json.loads(status.stdout)] == [
                ("0001.notes", True, False)
            ]
        # From this repository's folder (no [tool.datalayer]) the same database is not the built-in schema.
        builtin = _run(["status"], env, REPO)
        assert builtin.returncode == 1 and "builtin" in builtin.stderr, builtin.stdout + builtin.stderr
        assert f"builtin = true ({REPO / 'pyproject.toml'}, which has no [tool.datalayer]" in builtin.stderr
        # From a folder with no pyproject.toml up the tree, the message names no file that does not exist.
        assert not any((d / "pyproject.toml").exists() for d in (elsewhere, *elsewhere.parents))
        bare = _run(["status"], env, elsewhere)
        assert bare.returncode == 1, bare.stdout + bare.stderr
        assert f"builtin = true (no pyproject.toml found from {elsewhere} up: the built-in schema only)" in bare.stderr
        plan = _run(["plan", "--sql", "--project", str(root)], env, elsewhere)
        assert plan.returncode == 0 and "-- migration" not in plan.stdout and "partition" not in plan.stdout
        health = _run(["health", "--json", "--project", str(root)], env, elsewhere)
        report = json.loads(health.stdout)
        assert health.returncode == 0 and report["status"] == "healthy", health.stdout
        assert "partitions" not in report["checks"]
        partitions = _run(["partitions", "list", "--project", str(root)], env, elsewhere)
        assert partitions.returncode == 1 and "builtin = false" in partitions.stderr
        lint = _run(["lint-migrations", "--project", str(root)], env, elsewhere)
        assert lint.returncode == 0, lint.stdout + lint.stderr
        reset = _run(["reset", "--yes", "--project", str(root)], env, elsewhere)
        assert reset.returncode == 0 and reset.stdout == "reset: re-applied 0001.notes\n", reset.stderr
        from datalayer.pool import connect

        with connect(Settings.from_env({}), datalayer_server.target_for(name)) as db:
            tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert "notes" in tables and "users" not in tables and "system_log" not in tables


def test_role_passwords_come_from_settings() -> None:
    s = Settings.from_env({"DATALAYER_APP_PASSWORD": "AppPw_1", "DATALAYER_READONLY_PASSWORD": ""})
    assert s.app_password == Secret("AppPw_1") and s.readonly_password is None  # empty means unset
    assert "AppPw_1" not in repr(s)
    assert Settings.from_env({}).app_password is None
