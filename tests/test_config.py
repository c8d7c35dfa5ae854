"""Settings.from_env: parsing, defaults, and errors that name the variable (never the password)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, clean_env
from psycopg.conninfo import conninfo_to_dict

from datalayer import ConfigError, Settings
from datalayer._environ import DATABASE_PARTS, REDIS_PARTS, VARIABLES
from datalayer.config import DatabaseTarget, RedisTarget, Secret
from datalayer.defaults import resolve_database
from datalayer.pool import open_pool
from datalayer.testing import TestServer


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
                                 "sslmode": "require", "require_auth": "!password"}
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
    assert s.database.params == {"host": "pg", "port": "5433", "dbname": "n", "user": "u", "sslmode": "verify-full",
                                 "require_auth": "!password"}
    assert s.database.password is not None and s.database.password.value == "pw"


@pytest.mark.parametrize(("url", "part"), [(u, p) for u, parts in (("DATABASE_URL", DATABASE_PARTS),
                                                                    ("REDIS_URL", REDIS_PARTS)) for p in parts])
def test_a_url_and_its_parts_together_are_refused(url: str, part: str) -> None:
    # One of them would be dropped without a word: DATABASE_PASSWORD beside DATABASE_URL used to vanish.
    value = "postgresql://app@db.internal/app" if url == "DATABASE_URL" else "redis://cache.internal/0"
    with pytest.raises(ConfigError) as e:
        Settings.from_env({url: value, part: "Zq7part"})
    assert e.value.variable == part and url in str(e.value) and "not both" in str(e.value)
    assert "Zq7part" not in str(e.value)  # the part's value (a password, say) is not repeated


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
        ({"POOL_TIMEOUT": "inf"}, "POOL_TIMEOUT"),
        ({"DATABASE_URL": "postgresql://u@h/d?bogus=1"}, "DATABASE_URL"),
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
    assert s.database.display == "postgresql://app:***@db/x?require_auth=!password&sslmode=verify-full"
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


# --- item 6: every setting fails in from_env(), never later at connect -----------------------------------


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"STATEMENT_TIMEOUT": "30d"}, "STATEMENT_TIMEOUT"),
        ({"LOCK_TIMEOUT": "2147483648"}, "LOCK_TIMEOUT"),
        ({"LOCK_TIMEOUT": "596524h"}, "LOCK_TIMEOUT"),
        ({"IDLE_IN_TRANSACTION_TIMEOUT": "500us"}, "IDLE_IN_TRANSACTION_TIMEOUT"),  # PostgreSQL: 0, i.e. off
        ({"STATEMENT_TIMEOUT": "٣s"}, "STATEMENT_TIMEOUT"),
        ({"POOL_SIZE": "1000000"}, "POOL_SIZE"),
        ({"MAX_OVERFLOW": "1000000"}, "MAX_OVERFLOW"),
        ({"POOL_SIZE": "600", "MAX_OVERFLOW": "600"}, "MAX_OVERFLOW"),
        ({"DATABASE_URL": "postgresql://u@h/d?target_session_attrs=bogus"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?gssencmode=always"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?keepalives_idle=-5"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?require_auth=scram-sha-256,!md5"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?require_auth=plaintext"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?load_balance_hosts=yes"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?ssl_min_protocol_version=TLSv9"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h1,h2/d?port=1,2,3"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?hostaddr=not-an-ip"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?options=-c%20search_path%3Dx"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?application_name=x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?connect_timeout=0"}, "DATABASE_URL"),
        # rules between parameters: libpq's own, checked offline
        ({"DATABASE_URL": "postgresql://u@db.example.com/d?sslmode=require&sslrootcert=system"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@127.0.0.1/d?sslnegotiation=direct"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@127.0.0.1/d?service=no_such_service_h5"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?min_protocol_version=3.2&max_protocol_version=3.0"}, "DATABASE_URL"),
        ({"DATABASE_SSLMODE": "require", "DATABASE_URL": "postgresql://u@h/d?sslmode=require"
          "&ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2"}, "DATABASE_URL"),
        ({"REDIS_URL": "redis://:p@[::1/0"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache/0?socket_timeout=60"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache/?db=99&db=1"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache/1?db=2"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://cache/0?ssl_cert_reqs=required"}, "REDIS_URL"),
        ({"REDIS_URL": "rediss://cache/0?ssl_cert_reqs=maybe"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:a@cache/0?password=b"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:a@cache/0", "REDIS_PASSWORD": "b"}, "REDIS_PASSWORD"),
    ],
)
def test_settings_that_used_to_fail_at_connect(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert e.value.variable == variable
    assert variable in str(e.value)


def test_bounds_that_postgresql_accepts() -> None:
    s = Settings.from_env({"STATEMENT_TIMEOUT": "2147483647", "LOCK_TIMEOUT": "24d", "IDLE_IN_TRANSACTION_TIMEOUT": "0",
                           "POOL_SIZE": "500", "MAX_OVERFLOW": "500"})
    assert "statement_timeout=2147483647ms" in s.session_options() and "lock_timeout=24d" in s.session_options()
    assert s.pool_max_size == 1000
    assert Settings.from_env({"LOCK_TIMEOUT": "1500us"}).lock_timeout == "1500us"
    ok = Settings.from_env({"DATABASE_URL": "postgresql://u@h1:5432,h2:5433/d?target_session_attrs=read-write"
                            "&load_balance_hosts=random&keepalives_idle=30&require_auth=scram-sha-256,none"})
    assert ok.database is not None and ok.database.params["require_auth"] == "scram-sha-256,none"
    public_ca = Settings.from_env({"DATABASE_URL": "postgresql://u@db.example.com/d?sslrootcert=system"})
    assert public_ca.database is not None and public_ca.database.params["sslmode"] == "verify-full"
    direct = Settings.from_env({"DATABASE_URL": "postgresql://u@127.0.0.1/d?sslnegotiation=direct&sslmode=require"})
    assert direct.database is not None and direct.database.params["sslnegotiation"] == "direct"


@pytest.mark.parametrize(
    "build",
    [
        lambda: Settings(statement_timeout="30d"),
        lambda: Settings(lock_timeout="forever"),
        lambda: Settings(pool_size=0),
        lambda: Settings(pool_size=True),
        lambda: Settings(pool_size=10, pool_min_size=11),
        lambda: Settings(max_overflow=-1),
        lambda: Settings(pool_timeout=float("nan")),
        lambda: Settings(connect_timeout=0),
        lambda: Settings(embedded="sometimes"),  # type: ignore[arg-type]
        lambda: Settings(application_name="x" * 64),
        lambda: Settings(cache_prefix="has space"),
        lambda: Settings(database="postgresql://h/d"),  # type: ignore[arg-type]
        lambda: DatabaseTarget(params={"host": "h", "sslmode": "sometimes"}),
        lambda: DatabaseTarget(params={"host": "h", "nonsense": "1"}),
        lambda: DatabaseTarget(params={"host": "h", "password": "in-the-params"}),
        lambda: DatabaseTarget(params={"host": "evil@h"}),
        lambda: RedisTarget(url="redis://cache/99"),
        lambda: RedisTarget(url="redis://:pw@cache/0"),
    ],
)
def test_constructors_refuse_nonsense_too(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigError):
        build()


# --- item 10: secrets never shown -----------------------------------------------------------------------


def _texts(s: Settings) -> list[str]:
    assert s.database is not None or s.redis is not None
    out = [repr(s), str(s)]
    for t in (s.database, s.redis):
        if t is not None:
            out += [t.display, repr(t)]
    return out


def test_every_secret_parameter_is_masked() -> None:
    s = Settings.from_env({
        "DATABASE_URL": "postgresql://app:TopSecret99@db/x?sslmode=require&sslkey=/k.pem&sslpassword=KeyPass88"
                        "&oauth_client_secret=OAuth77",
        "REDIS_URL": "rediss://user:RedisPw77@cache:6380/2?ssl_password=TlsKey66&ssl_cert_reqs=required",
    })
    for text in _texts(s):
        for secret in ("TopSecret99", "KeyPass88", "OAuth77", "RedisPw77", "TlsKey66"):
            assert secret not in text, (secret, text)
    assert s.database is not None and "sslpassword=***" in s.database.display
    assert s.database.params["sslpassword"] == "KeyPass88"  # still handed to libpq
    assert "sslpassword='KeyPass88'" in s.database.conninfo() or "sslpassword=KeyPass88" in s.database.conninfo()
    assert s.redis is not None and s.redis.password is not None and s.redis.password.value == "RedisPw77"


def test_redis_password_in_the_query_becomes_the_secret() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/5?password=QueryPw55"})
    assert s.redis is not None and s.redis.password is not None and s.redis.password.value == "QueryPw55"
    assert s.redis.url == "redis://127.0.0.1:6379/5"
    assert all("QueryPw55" not in t for t in _texts(s))


def test_cache_stats_show_no_secret() -> None:
    import json

    from datalayer.cache.manager import CacheManager

    target = Settings.from_env({"REDIS_URL": "redis://127.0.0.1:1/3?password=QueryPw55"}).redis
    cache = CacheManager(settings=Settings(), redis_target=target, use_table=False)
    try:
        text = json.dumps(cache.stats(), default=str)
    finally:
        cache.close()
    assert "QueryPw55" not in text and "redis://127.0.0.1:1/3" in text


@pytest.mark.parametrize(("password", "variable"), [
    *[(p, v) for p in ("Qxw/Zk99Wv", "Qxw@Zk99Wv", "Qxw#Zk99Wv", "Qxw?Zk99Wv", "Qxw/Zkq@99Wv")
      for v in ("DATABASE_URL", "REDIS_URL")],
    ("Qxw%zz99Wv", "DATABASE_URL"),
])
def test_unencoded_separators_in_the_password_are_not_echoed(password: str, variable: str) -> None:
    scheme = "postgresql" if variable == "DATABASE_URL" else "redis"
    url = f"{scheme}://app:{password}@db.internal:5432/0"
    try:
        Settings.from_env({variable: url})
    except ConfigError as e:
        text = str(e) + repr(e) + str(e.__cause__ or "") + str(e.__context__ or "")
        assert e.variable == variable
    else:
        pytest.fail(f"{url} was accepted")
    pieces = [p for p in re.split(r"[/@#?%]", password) if len(p) >= 3]
    assert pieces and not any(p in text for p in pieces), text


def test_errors_never_echo_a_host_that_smuggles_a_password() -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"REDIS_HOST": "127.0.0.1:56999/15?password=Smuggled44#"})
    assert "Smuggled44" not in str(e.value) and e.value.variable == "REDIS_HOST"
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATABASE_HOST": "h password=Smuggled44", "DATABASE_PASSWORD": "x"})
    assert "Smuggled44" not in str(e.value) and e.value.variable == "DATABASE_HOST"


# --- item 13: each part is what it says, and is escaped -------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:56999/15?password=X#", "evil@127.0.0.1", "cache/1", "cache?db=3", "cache#x", "cache 1", "-cache",
     "cache:6380", "[::1", "ca\u0301che", "", "999.1.1.1", "10.0.0"],
)
def test_redis_host_is_a_host(host: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"REDIS_HOST": host or " "})
    assert e.value.variable == "REDIS_HOST"


@pytest.mark.parametrize(("host", "url"), [
    ("cache.internal", "redis://cache.internal:6379/0"), ("10.0.0.7", "redis://10.0.0.7:6379/0"),
    ("::1", "redis://[::1]:6379/0"), ("[fd00::2]", "redis://[fd00::2]:6379/0"), ("redis_1", "redis://redis_1:6379/0"),
])
def test_redis_hosts_accepted(host: str, url: str) -> None:
    s = Settings.from_env({"REDIS_HOST": host})
    assert s.redis is not None and s.redis.url == url


@pytest.mark.parametrize(("env", "variable"), [
    ({"REDIS_PORT": "6379/15"}, "REDIS_PORT"), ({"REDIS_PORT": "1,2"}, "REDIS_PORT"),
    ({"REDIS_DB": "1?password=x"}, "REDIS_DB"), ({"REDIS_DB": "-0"}, "REDIS_DB"),
    ({"DATABASE_HOST": "evil@h"}, "DATABASE_HOST"), ({"DATABASE_HOST": "h port=1"}, "DATABASE_HOST"),
    ({"DATABASE_HOST": "h/db"}, "DATABASE_HOST"), ({"DATABASE_HOST": "h?sslmode=disable"}, "DATABASE_HOST"),
    ({"DATABASE_HOST": "h", "DATABASE_PORT": "5432 sslmode=disable"}, "DATABASE_PORT"),
    ({"DATABASE_HOST": "h", "DATABASE_USER": "u\nx"}, "DATABASE_USER"),
    ({"DATABASE_HOST": "h", "DATABASE_NAME": "d\x00x"}, "DATABASE_NAME"),
])
def test_parts_are_validated_as_what_they_are(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env(env)
    assert e.value.variable == variable


def test_names_are_escaped_not_interpreted() -> None:
    s = Settings.from_env({"DATABASE_HOST": "db.internal", "DATABASE_USER": "a b' host=evil",
                           "DATABASE_NAME": "n/x?sslmode=disable#", "DATABASE_PASSWORD": "p w'='"})
    assert s.database is not None
    assert conninfo_to_dict(s.database.conninfo()) == {**s.database.params, "password": "p w'='"}
    assert s.database.params["host"] == "db.internal" and s.database.params["sslmode"] == "verify-full"
    shown = s.database.display
    assert "host=evil" not in shown and "?sslmode=disable" not in shown
    assert shown.startswith("postgresql://a%20b%27%20host%3Devil:***@db.internal:5432/n%2Fx%3Fsslmode%3Ddisable%23?")


# --- item 18: .env in the working directory --------------------------------------------------------------


@pytest.fixture
def dotenv_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATALAYER_DOTENV", raising=False)
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_dotenv_is_read_and_the_environment_wins(dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (dotenv_dir / ".env").write_text(
        "# comment\nDATABASE_URL=postgresql://app:Dollar$1${HOME}@db.internal/app\nPOOL_SIZE=3\nMAX_OVERFLOW=4\n"
    )
    monkeypatch.setenv("MAX_OVERFLOW", "9")
    s = Settings.from_env()
    assert s.database is not None and s.database.params["host"] == "db.internal"
    assert s.database.password is not None and s.database.password.value == "Dollar$1${HOME}"  # taken literally
    assert (s.pool_size, s.max_overflow) == (3, 9)
    # A mapping passed in is used as it is: no .env.
    assert Settings.from_env({}).database is None
    monkeypatch.setenv("DATALAYER_DOTENV", "0")
    assert Settings.from_env().database is None


def test_unreadable_dotenv_and_bad_switch_are_config_errors(dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (dotenv_dir / ".env").mkdir()
    with pytest.raises(ConfigError) as e:
        Settings.from_env()
    assert e.value.variable == "DATALAYER_DOTENV"
    monkeypatch.setenv("DATALAYER_DOTENV", "perhaps")
    with pytest.raises(ConfigError) as e:
        Settings.from_env()
    assert e.value.variable == "DATALAYER_DOTENV"


def test_copied_env_example_refuses_the_embedded_fallback(dotenv_dir: Path) -> None:
    shutil.copy(ROOT / ".env.example", dotenv_dir / ".env")
    s = Settings.from_env()
    assert s.embedded == "never" and s.database is None
    with pytest.raises(ConfigError) as e:
        resolve_database(s)
    assert e.value.variable == "DATABASE_URL"


def test_the_test_plugin_is_not_redirected_by_a_dotenv(tmp_path: Path) -> None:
    # The plugin opts the whole test run (and every subprocess it starts) out of .env.
    assert os.environ.get("DATALAYER_DOTENV") == "0"
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://nobody@203.0.113.9/redirected\nPOOL_SIZE=2\n")
    code = "from datalayer import Settings; s = Settings.from_env(); print(s.database, s.pool_size)"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "20"]


# --- review A: one layer names the server; no value is cut, repeated or half-read -----------------------


def test_the_environment_wins_over_the_file_by_group(dotenv_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (dotenv_dir / ".env").write_text(
        "DATABASE_URL=postgresql://u:FileSecret@file-host.example/filedb\nREDIS_URL=redis://file-redis.example/3\n"
        "POOL_SIZE=3\nMAX_OVERFLOW=4\n"
    )
    monkeypatch.setenv("DATABASE_HOST", "env-host.example")
    monkeypatch.setenv("DATABASE_NAME", "envdb")
    monkeypatch.setenv("REDIS_HOST", "env-redis.example")
    monkeypatch.setenv("MAX_OVERFLOW", "9")
    s = Settings.from_env()
    assert s.database is not None and s.redis is not None
    assert (s.database.params["host"], s.database.params["dbname"]) == ("env-host.example", "envdb")
    assert s.database.password is None  # the file's password does not follow its URL to the environment's host
    assert s.redis.url == "redis://env-redis.example:6379/0"
    assert (s.pool_size, s.max_overflow) == (3, 9)  # other variables one by one
    # A group the environment leaves alone (empty means unset) still comes from the file.
    monkeypatch.setenv("REDIS_HOST", "")
    s = Settings.from_env()
    assert s.redis is not None and s.redis.url == "redis://file-redis.example/3"
    # A part set in the environment does not borrow the rest of its group from the file.
    monkeypatch.delenv("DATABASE_HOST")
    with pytest.raises(ConfigError) as e:
        Settings.from_env()
    assert e.value.variable == "DATABASE_HOST" and ".env" in str(e.value)


def test_the_file_alone_still_configures_both_groups(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("DATABASE_HOST=db.internal\nDATABASE_PASSWORD=pw\nREDIS_URL=redis://c/1\n")
    s = Settings.from_env()
    assert s.database is not None and s.database.params["host"] == "db.internal"
    assert s.database.password == Secret("pw")
    assert s.redis is not None and s.redis.url == "redis://c/1"


@pytest.mark.parametrize("url", [
    "postgresql://u@db.example.com/db?sslmode=verify-full&sslmode=disable",
    "postgresql://u@db.example.com/db?sslrootcert=/ca.pem&sslmode=verify-full&require_auth=scram-sha-256"
    "&require_auth=password",
    "postgresql://u@db.example.com/db?sslmode=verify-full&ssl=true",  # libpq: ssl=true means sslmode=require
    "postgresql://u@db.example.com/db?sslmode=verify-full&ssl%6dode=disable",  # libpq decodes names too
    "postgresql://u@db.example.com/db?host=other.example.com",
    "postgresql://u@db.example.com:5432/db?port=6432",
    "postgresql://u@db.example.com/db?dbname=other",
    "postgresql://u@db.example.com/db?user=other",
    "postgresql://u:Zq7first@db.example.com/db?password=Zq7second",
])
def test_a_database_url_parameter_given_twice_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATABASE_URL": url})
    assert e.value.variable == "DATABASE_URL" and "twice" in str(e.value)
    assert "Zq7" not in str(e.value) and "disable" not in str(e.value)


def test_a_parameter_given_once_is_kept() -> None:
    socket_dir = Settings.from_env({"DATABASE_URL": "postgresql:///db?host=/var/run/postgresql&port=5433"})
    assert socket_dir.database is not None and socket_dir.database.params["host"] == "/var/run/postgresql"
    jdbc = Settings.from_env({"DATABASE_URL": "postgresql://u@db.example.com/db?ssl=true"})
    assert jdbc.database is not None and jdbc.database.params["sslmode"] == "require"


_BAD_CHARACTERS = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\udcff"]


@pytest.mark.parametrize("name", VARIABLES)
@pytest.mark.parametrize("bad", _BAD_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in _BAD_CHARACTERS])
def test_a_control_character_in_any_variable_is_refused(name: str, bad: str) -> None:
    # libpq stops at a NUL: 'postgresql://u@127.0.0.1/db\x00?sslmode=require' used to connect without TLS.
    value = f"Zq7{bad}secret"
    with pytest.raises(ConfigError) as e:
        Settings.from_env({name: value})
    assert e.value.variable == name and name in str(e.value)
    assert "Zq7" not in str(e.value) and "secret" not in str(e.value)


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/review_a_1\x00_other",
    "postgresql://post\x00gres@127.0.0.1/db",
    "postgresql://u@127.0.0.1/db?sslrootcert=/x\x00y&sslmode=verify-full",
    "postgresql://u@127.0.0.1/db\x00?sslmode=require",
])
def test_a_nul_never_cuts_a_url(url: str) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATABASE_URL": url})
    assert e.value.variable == "DATABASE_URL" and "U+0000" in str(e.value)


def test_targets_built_directly_refuse_control_characters_too() -> None:
    with pytest.raises(ConfigError):
        Secret("pw\x00rest")
    with pytest.raises(ConfigError):
        RedisTarget(url="redis://cache/0\x00")
    with pytest.raises(ConfigError):
        DatabaseTarget(params={"host": "127.0.0.1", "sslrootcert": "/x\x00y"})


@pytest.mark.parametrize(("name", "value"), [("POOL_SIZE", 5), ("DATABASE_URL", b"postgresql://h/d"),
                                             ("DATALAYER_HOME", Path("/tmp")), ("CACHE_PREFIX", None)])
def test_a_value_that_is_not_text_names_its_variable(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({name: value})  # type: ignore[dict-item]
    assert e.value.variable == name and "text" in str(e.value)


@pytest.mark.parametrize("home", [
    "relative/home", "./home", "/tmp/a\x00b", "/tmp/" + "h" * 100, "/tmp/home\n",
])
def test_a_home_the_embedded_servers_cannot_use_is_refused_at_once(home: str) -> None:
    for build in (lambda: Settings(home=home), lambda: Settings.from_env({"DATALAYER_HOME": home})):
        with pytest.raises(ConfigError) as e:
            build()
        assert e.value.variable == "DATALAYER_HOME"


def test_home_limits_come_from_the_embedded_server(tmp_path: Path) -> None:
    from datalayer._embedded_pg import MAX_SOCKET_PATH

    tail = len("/pgdata/.s.PGSQL.5432")
    fits = tmp_path / ("h" * (MAX_SOCKET_PATH - tail - len(str(tmp_path)) - 1))
    assert Settings(home=fits).home == fits
    with pytest.raises(ConfigError):
        Settings(home=str(fits) + "h")
    assert Settings(home="~/dl").home == Path.home() / "dl"


def test_a_relative_xdg_data_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The XDG base directory spec: a relative path there is invalid and must be ignored.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/share")
    assert Settings().home == Path.home() / ".local" / "share" / "datalayer"
    monkeypatch.setenv("XDG_DATA_HOME", "/srv/share")
    assert Settings().home == Path("/srv/share/datalayer")


@pytest.mark.parametrize(("content", "line", "variable"), [
    ('DATABASE_URL="postgresql://app:Zq7pw@db.internal/prod\n', 1, "DATABASE_URL"),
    ("# settings\n\nPOOL_SIZE=3\n\n\nexport DATABASE_URL='postgresql://app:Zq7pw@db.internal/prod\n", 6,
     "DATABASE_URL"),
    ("POOL_SIZE=3\nOTHER_TOOL='Zq7unterminated\n", 2, "DATALAYER_DOTENV"),
    ("POOL_SIZE=3\nDATABASE_URL\n", 2, "DATABASE_URL"),
    ("DATABASE_URL=postgresql://a@h/x\n\nDATABASE_URL=postgresql://a@Zq7other/x\n", 3, "DATABASE_URL"),
])
def test_a_malformed_dotenv_is_refused_naming_file_and_line(dotenv_dir: Path, content: str, line: int,
                                                            variable: str) -> None:
    (dotenv_dir / ".env").write_text(content)
    with pytest.raises(ConfigError) as e:
        Settings.from_env()
    assert e.value.variable == variable
    assert str(dotenv_dir / ".env") in str(e.value) and f"line {line}" in str(e.value).replace("lines 1 and", "line")
    assert "Zq7" not in str(e.value)


def test_a_dotenv_with_a_byte_order_mark_and_foreign_bare_names_is_read(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("\ufeffDATABASE_URL=postgresql://a@db.internal/x\nOTHER_TOOL_FLAG\n",
                                     encoding="utf-8")
    s = Settings.from_env()
    assert s.database is not None and s.database.params["host"] == "db.internal"


def test_a_nul_in_the_dotenv_is_refused(dotenv_dir: Path) -> None:
    (dotenv_dir / ".env").write_text("DATABASE_URL=postgresql://u:Zq7pw@127.0.0.1/db\x00x?sslmode=disable\n")
    with pytest.raises(ConfigError) as e:
        Settings.from_env()
    assert e.value.variable == "DATABASE_URL" and "Zq7" not in str(e.value)


@pytest.mark.parametrize("query", ["channel_binding=require", "gssencmode=require", "min_protocol_version=3.2"])
def test_settings_the_server_can_never_accept_are_config_errors(datalayer_server: TestServer, query: str) -> None:
    # These fail the same way on every attempt: a TransientError would have callers retry them forever.
    import psycopg

    base = datalayer_server.target
    key, value = query.split("=")
    target = DatabaseTarget(params={**base.params, key: value}, password=base.password)
    with psycopg.connect(base.conninfo()) as conn:
        version = conn.info.server_version
    if key == "min_protocol_version" and version >= 180000:
        open_pool(Settings(connect_timeout=5), target=target, wait=True).close()  # PostgreSQL 18 speaks 3.2
        return
    with pytest.raises(ConfigError) as e:
        open_pool(Settings(connect_timeout=5), target=target, wait=True)
    assert e.value.variable == "DATABASE_URL"
