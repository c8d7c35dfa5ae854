"""The embedded default: starts with no settings, reuses its data, migrates, says so once, can be refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from helpers import clean_env, run_py

from datalayer import ConfigError, Settings
from datalayer.embedded import start_embedded_postgres, start_embedded_redis

SNIPPET = textwrap.dedent("""
    from datalayer import connection, get_db, user_repo
    import uuid
    n = uuid.uuid4().hex[:8]
    with connection() as db:
        u = user_repo.create(db, username=n, email=n + "@example.com", hashed_password="x")
        assert user_repo.get_by_id(db, u.id) == u
    db = next(get_db())
    m = uuid.uuid4().hex[:8]
    v = user_repo.create(db, username=m, email=m + "@example.com", hashed_password="x")
    assert user_repo.get_by_id(db, v.id) == v
    print("users", user_repo.count(db))
""")


def test_no_settings_starts_migrates_and_reuses(dl_home: Path) -> None:
    tmp_path = dl_home
    env = clean_env(DATALAYER_HOME=str(tmp_path / "home"))
    first = run_py(SNIPPET, env, timeout=180)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "users 2"
    lines = [ln for ln in first.stderr.splitlines() if "embedded PostgreSQL" in ln]
    assert len(lines) == 1 and str(tmp_path / "home" / "pgdata") in lines[0]
    assert "DATABASE_URL" in lines[0] and "DATALAYER_EMBEDDED=never" in lines[0]
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists(), "the server outlived its process"
    second = run_py(SNIPPET, env, timeout=180)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "users 4"  # same data directory, reused


def test_no_start_after_the_exit_hook(dl_home: Path) -> None:
    tmp_path = dl_home
    # An exit hook registered before datalayer was imported runs after datalayer's own: a server it
    # started would never be stopped, so the start is refused with a clear error instead.
    code = textwrap.dedent("""
        import atexit

        def late():
            from datalayer import connection
            try:
                with connection() as db:
                    db.execute("SELECT 1")
            except Exception as e:
                print(type(e).__name__, e)

        atexit.register(late)
        import datalayer
    """)
    r = run_py(code, clean_env(DATALAYER_HOME=str(tmp_path / "home")), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ConfigError") and "interpreter exits" in r.stdout
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()


def test_never_refuses_the_fallback(tmp_path: Path) -> None:
    env = clean_env(DATALAYER_HOME=str(tmp_path / "home"), DATALAYER_EMBEDDED="never")
    r = run_py(SNIPPET, env)
    assert r.returncode != 0
    assert "ConfigError" in r.stderr and "DATALAYER_EMBEDDED=never" in r.stderr and "DATABASE_URL" in r.stderr
    assert not (tmp_path / "home" / "pgdata").exists()


def test_never_refuses_in_process(tmp_path: Path) -> None:
    s = Settings.from_env({"DATALAYER_HOME": str(tmp_path), "DATALAYER_EMBEDDED": "never"})
    with pytest.raises(ConfigError, match="DATABASE_URL") as e:
        start_embedded_postgres(s)
    assert e.value.variable == "DATABASE_URL"
    with pytest.raises(ConfigError, match="REDIS_URL"):
        start_embedded_redis(s)


def test_configured_server_is_never_migrated_implicitly(datalayer_server: object, tmp_path: Path) -> None:
    from datalayer.testing import TestServer

    assert isinstance(datalayer_server, TestServer)
    janitor = datalayer_server.janitor("dl_not_migrated")
    janitor.drop()
    with janitor:
        from helpers import url_of

        env = clean_env(DATABASE_URL=url_of(datalayer_server.target_for("dl_not_migrated")),
                        DATALAYER_HOME=str(tmp_path))
        r = run_py("from datalayer import connection\nwith connection() as db:\n"
                   "    print(db.execute(\"SELECT to_regclass('users')\").fetchone())", env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "(None,)"
        assert "embedded" not in r.stderr
