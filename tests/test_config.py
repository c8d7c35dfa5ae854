"""Settings.from_env: parsing, defaults, and errors that name the variable (never the password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer import ConfigError, Settings


def test_defaults_without_any_setting() -> None:
    s = Settings.from_env({})
    assert s.database is None and s.redis is None
    assert (s.pool_size, s.max_overflow, s.pool_min_size, s.pool_timeout, s.pool_recycle) == (20, 30, 20, 30.0, 3600.0)
    assert s.pool_max_size == 50
    assert s.embedded == "auto"
    assert "TimeZone=UTC" in s.session_options()


def test_database_url_and_pool_mapping() -> None:
    s = Settings.from_env({
        "DATABASE_URL": "postgresql://app:s3cr%40t@db.internal:6432/appdb?sslmode=require",
        "POOL_SIZE": "5", "MAX_OVERFLOW": "7", "POOL_TIMEOUT": "2.5", "POOL_RECYCLE": "60", "POOL_MIN_SIZE": "1",
        "STATEMENT_TIMEOUT": "1500", "LOCK_TIMEOUT": "2s", "IDLE_IN_TRANSACTION_TIMEOUT": "5min",
        "CONNECT_TIMEOUT": "3", "DATALAYER_APP_NAME": "billing",
    })
    assert s.database is not None
    assert s.database.params == {"user": "app", "host": "db.internal", "port": "6432", "dbname": "appdb",
                                 "sslmode": "require"}
    assert s.database.password is not None and s.database.password.value == "s3cr@t"
    assert (s.pool_size, s.pool_min_size, s.pool_max_size, s.pool_timeout, s.pool_recycle) == (5, 1, 12, 2.5, 60.0)
    opts = s.session_options()
    assert "statement_timeout=1500ms" in opts and "lock_timeout=2s" in opts
    assert "idle_in_transaction_session_timeout=5min" in opts
    assert s.connect_timeout == 3 and s.application_name == "billing"
    assert "password=s3cr@t" in s.database.conninfo()


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_accepted_schemes(scheme: str) -> None:
    s = Settings.from_env({"DATABASE_URL": f"{scheme}://u@h/d"})
    assert s.database is not None and s.database.params["dbname"] == "d"


def test_parts() -> None:
    s = Settings.from_env({"DATABASE_HOST": "pg", "DATABASE_PORT": "5433", "DATABASE_NAME": "n",
                           "DATABASE_USER": "u", "DATABASE_PASSWORD": "pw", "DATABASE_SSLMODE": "verify-full"})
    assert s.database is not None
    assert s.database.params == {"host": "pg", "port": "5433", "dbname": "n", "user": "u", "sslmode": "verify-full"}
    assert s.database.password is not None and s.database.password.value == "pw"


def test_url_wins_over_parts() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://a@urlhost/x", "DATABASE_HOST": "parthost"})
    assert s.database is not None and s.database.params["host"] == "urlhost"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"POOL_SIZE": "abc"}, "POOL_SIZE"),
        ({"POOL_SIZE": "0"}, "POOL_SIZE"),
        ({"MAX_OVERFLOW": "-1"}, "MAX_OVERFLOW"),
        ({"POOL_TIMEOUT": "soon"}, "POOL_TIMEOUT"),
        ({"POOL_TIMEOUT": "-3"}, "POOL_TIMEOUT"),
        ({"POOL_RECYCLE": "nan"}, "POOL_RECYCLE"),
        ({"POOL_MIN_SIZE": "99"}, "POOL_MIN_SIZE"),
        ({"STATEMENT_TIMEOUT": "forever"}, "STATEMENT_TIMEOUT"),
        ({"DATABASE_URL": "mysql://u:p@h/d"}, "DATABASE_URL"),
        ({"DATABASE_URL": "just-a-string"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u:p@h:99999/d"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?sslmode=sometimes"}, "DATABASE_URL"),
        ({"DATABASE_HOST": "h", "DATABASE_PORT": "99999"}, "DATABASE_PORT"),
        ({"DATABASE_HOST": "h", "DATABASE_PORT": "http"}, "DATABASE_PORT"),
        ({"DATABASE_PORT": "5432"}, "DATABASE_HOST"),
        ({"DATABASE_SSLMODE": "maybe", "DATABASE_HOST": "h"}, "DATABASE_SSLMODE"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache:70000/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache/99"}, "REDIS_URL"),
        ({"REDIS_PORT": "x"}, "REDIS_PORT"),
        ({"REDIS_DB": "16"}, "REDIS_DB"),
        ({"DATALAYER_EMBEDDED": "sometimes"}, "DATALAYER_EMBEDDED"),
        ({"CACHE_PREFIX": "has space"}, "CACHE_PREFIX"),
        ({"CONNECT_TIMEOUT": "0"}, "CONNECT_TIMEOUT"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert e.value.variable == variable
    assert variable in str(e.value)


@pytest.mark.parametrize("url", [
    "postgresql://app:TopSecret99@db:99999/x",
    "mysql://app:TopSecret99@db/x",
    "postgresql://app:TopSecret99@db/x?sslmode=bogus",
    "postgresql://app:TopSecret99@[::1/x",
])
def test_password_never_in_errors(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATABASE_URL": url})
    text = str(e.value) + repr(e.value) + str(e.value.__cause__ or "")
    assert "TopSecret99" not in text


def test_password_never_in_repr_or_display() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://app:TopSecret99@db/x", "REDIS_URL": "redis://:RedisPw77@r:6379/1"})
    assert s.database is not None and s.redis is not None
    for text in (repr(s), str(s), s.database.display, s.redis.display, repr(s.database), repr(s.redis)):
        assert "TopSecret99" not in text and "RedisPw77" not in text
    assert s.database.display == "postgresql://app:***@db/x"
    assert s.redis.password is not None and s.redis.password.value == "RedisPw77"


def test_redis_settings() -> None:
    s = Settings.from_env({"REDIS_HOST": "cache", "REDIS_PORT": "6380", "REDIS_DB": "2", "REDIS_PASSWORD": "p"})
    assert s.redis is not None and s.redis.url == "redis://cache:6380/2"
    unix = Settings.from_env({"REDIS_URL": "unix:///run/redis/redis.sock?db=2"})
    assert unix.redis is not None and unix.redis.url == "unix:///run/redis/redis.sock?db=2"
    tls = Settings.from_env({"REDIS_URL": "rediss://user:pw@cache:6380/3"})
    assert tls.redis is not None and tls.redis.url == "rediss://user@cache:6380/3"
    assert tls.redis.password is not None and tls.redis.password.value == "pw"


def test_empty_values_are_unset() -> None:
    assert Settings.from_env({"DATABASE_URL": "", "POOL_SIZE": ""}).database is None


def test_home_and_embedded(tmp_path: Path) -> None:
    s = Settings.from_env({"DATALAYER_HOME": str(tmp_path), "DATALAYER_EMBEDDED": "NEVER"})
    assert s.home == tmp_path and s.embedded == "never"
