"""SystemLogHandler under hostile records and refusals: nothing a caller logs stops it, a refused record is
isolated and counted, and the handler writes where the default pool points."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, run_py, url_of

from datalayer import SystemLogHandler, ValidationError, log_system_event
from datalayer import system_log_repo as repo
from datalayer.pool import DataLayerPool, connection
from datalayer.testing import TestServer, fresh_database

BAD = os.fsdecode(b"\xff")  # a lone surrogate, as undecodable file names come back


def _messages(pool: DataLayerPool, service: str) -> list[Any]:
    now = datetime.now(UTC)
    with connection(pool) as db:
        page = repo.find(db, since=now - timedelta(hours=1), until=now + timedelta(hours=1), service=service,
                         limit=1000)
    return page.items


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def test_hostile_records_are_cleaned_and_never_stop_the_writer(dl_pool: DataLayerPool) -> None:
    handler = SystemLogHandler(service=f"svc{BAD}", pool=dl_pool, batch_size=8, flush_interval=0.02)
    log = _logger(f"hostile.{BAD}", handler)
    loop: list[Any] = []
    loop.append(loop)
    try:
        log.info("before")
        log.info("file %s gone", BAD)
        log.warning("nul \x00 here")
        log.info("extra", extra={"path": BAD, BAD: "key", "nested": {"k": [BAD, "\x00"]}, "big": 2**70,
                                 "nan": float("nan"), "obj": object(), "set": {1, 2}, "loop": loop,
                                 "bad": Unprintable()})
        log.info("huge", extra={"huge": ["x" * 50_000] * 100})
        log.info("%d args", "not a number")
        log.error("m" * 300_000)
        try:
            raise ValueError(BAD)
        except ValueError:
            log.exception("boom")
        for i in range(20):
            log.info("after %d", i)
        assert handler.drain(15), f"stuck with {handler.pending()} pending"
    finally:
        handler.close()
    assert handler.rejected == 0 and handler.dropped == 0
    assert handler.written == 28
    rows = _messages(dl_pool, "svc\\udcff")
    messages = {r.message for r in rows}
    assert {"before", "file \\udcff gone", "nul \\x00 here", "after 19"} <= messages
    extra = next(r for r in rows if r.message == "extra")
    assert extra.details["path"] == "\\udcff" and extra.details["\\udcff"] == "key"
    assert extra.details["nested"] == {"k": ["\\udcff", "\\x00"]}
    assert extra.details["big"] == str(2**70) and extra.details["nan"] == "nan"
    assert extra.details["logger"] == "hostile.\\udcff" and extra.details["bad"].startswith("<Unprintable")
    assert "[...]" in str(extra.details["loop"]) and extra.details["set"] == "{1, 2}"  # cut at MAX_DEPTH
    huge = next(r for r in rows if r.message == "huge").details
    assert "huge" not in huge and "limit" in huge["extra_dropped"] and huge["logger"] == "hostile.\\udcff"
    assert "ValueError: \\udcff" in next(r for r in rows if r.message == "boom").details["exception"]
    assert len(next(r for r in rows if r.message.startswith("mmm")).message) == repo.MAX_MESSAGE_CHARS
    assert any(r.message.startswith("%d args") for r in rows)


def test_a_refused_record_is_isolated_dropped_and_counted(dl_pool: DataLayerPool,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with connection(dl_pool) as db:  # this test's own database refuses one message, whatever the cleaning
        db.execute("ALTER TABLE system_log ADD CONSTRAINT no_poison CHECK (message <> 'poison')")
    handler = SystemLogHandler(service="iso", pool=dl_pool, batch_size=64, flush_interval=0.02)
    log = _logger("iso", handler)
    try:
        with connection(dl_pool) as locker:  # the records pile up behind a lock: one batch holds them all
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE system_log IN ACCESS EXCLUSIVE MODE")
            for i in range(30):
                log.info("good %d", i)
            log.info("poison")
            for i in range(30, 60):
                log.info("good %d", i)
            locker.execute("ROLLBACK")
        assert handler.drain(15), f"stuck with {handler.pending()} pending"
        log.info("later")
        assert handler.drain(15)
    finally:
        handler.close()
    assert handler.rejected == 1 and handler.written == 61
    messages = sorted(r.message for r in _messages(dl_pool, "iso"))
    assert messages == sorted([f"good {i}" for i in range(60)] + ["later"])
    assert "refused" in capsys.readouterr().err


def test_a_lost_connection_is_retried_not_rejected(dl_pool: DataLayerPool) -> None:
    handler = SystemLogHandler(service="retry", pool=dl_pool, batch_size=100, flush_interval=0.02)
    log = _logger("retry", handler)
    waiting = ("FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
               "AND query LIKE 'COPY%'")
    with connection(dl_pool) as locker, connection(dl_pool) as watcher:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE system_log IN ACCESS EXCLUSIVE MODE")
        log.info("blocked 1")
        log.info("blocked 2")
        deadline = time.monotonic() + 10
        while not watcher.execute(f"SELECT count(*) {waiting}").fetchone()[0]:
            assert time.monotonic() < deadline, "the writer never waited for the lock"
            time.sleep(0.02)
        # The writer's connection dies while it waits: a transient failure, so the batch is retried.
        watcher.execute(f"SELECT pg_terminate_backend(pid) {waiting}")
        locker.execute("ROLLBACK")
    try:
        assert handler.drain(15)
    finally:
        handler.close()
    assert handler.rejected == 0 and handler.written == 2
    assert sorted(r.message for r in _messages(dl_pool, "retry")) == ["blocked 1", "blocked 2"]


def test_the_handler_writes_where_the_default_pool_points(
    datalayer_server: TestServer, dl_pool: DataLayerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment names a server that does not exist: the handler must not go there (nor start one).
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    handler = SystemLogHandler(service="follow", flush_interval=0.02)
    log = _logger("follow", handler)
    try:
        log.info("into the test database")
        assert handler.drain(10), "the handler did not follow the default pool"
        with fresh_database(datalayer_server) as other:  # installs another default pool
            log.info("into the other database")
            assert handler.drain(10)
            assert [r.message for r in _messages(other, "follow")] == ["into the other database"]
        log.info("back again")
        assert handler.drain(10)
    finally:
        handler.close()
    assert sorted(r.message for r in _messages(dl_pool, "follow")) == ["back again", "into the test database"]


def test_a_handler_in_a_process_with_its_own_default_pool_starts_no_server(dl_pool: DataLayerPool,
                                                                           tmp_path: Path) -> None:
    url = url_of(dl_pool.target)
    code = (
        "import logging\n"
        "from datalayer import SystemLogHandler\n"
        "from datalayer.config import Settings\n"
        "from datalayer import set_default_pool\n"
        "from datalayer.pool import open_pool\n"
        f"s = Settings.from_env({{'DATABASE_URL': {url!r}}})\n"
        "set_default_pool(open_pool(s, target=s.database))\n"
        "h = SystemLogHandler(service='proc', flush_interval=5)\n"
        "logging.getLogger().addHandler(h)\n"
        "logging.getLogger().setLevel(logging.INFO)\n"
        "for i in range(5): logging.info('from the process %d', i)\n"
    )
    home = tmp_path / "home"
    r = run_py(code, clean_env(DATALAYER_HOME=str(home)), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "could not be written" not in r.stderr
    assert len(_messages(dl_pool, "proc")) == 5
    assert not (home / "pgdata").exists(), "the handler started an embedded server of its own"


def test_a_forked_child_writes_its_own_records_once(dl_pool: DataLayerPool) -> None:
    url = url_of(dl_pool.target)
    code = (
        "import logging, os, sys\n"
        "from datalayer import SystemLogHandler\n"
        "h = SystemLogHandler(service='fork', flush_interval=5)\n"  # the parent's first records wait in the buffer
        "logging.getLogger().addHandler(h)\n"
        "logging.getLogger().setLevel(logging.INFO)\n"
        "for i in range(3): logging.info('parent before fork %d', i)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    for i in range(4): logging.info('child %d', i)\n"
        "    ok = h.drain(20)\n"
        "    print('child', ok, h.written, flush=True)\n"
        "    os._exit(0 if ok and h.written == 4 else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "logging.info('parent after fork')\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    r = run_py(code, clean_env(DATABASE_URL=url), timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    messages = sorted(r.message for r in _messages(dl_pool, "fork"))
    assert messages == sorted([f"parent before fork {i}" for i in range(3)] + [f"child {i}" for i in range(4)]
                              + ["parent after fork"])


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"message": f"x{BAD}"}, "message"),
    ({"service": BAD}, "service"),
    ({"details": {"k": BAD}}, "details"),
    ({"details": {BAD: 1}}, "details"),
])
def test_log_system_event_names_the_field_of_unstorable_text(db: Any, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"service": "s", "level": "INFO", "message": "m", **kwargs}
    with pytest.raises(ValidationError) as e:
        log_system_event(db, **args)
    assert field in e.value.errors
    with pytest.raises(ValidationError) as e2:
        repo.bulk_insert(db, [{"service": "s", "level": "INFO", "message": "ok"}, args])
    assert f"events[1].{field}" in e2.value.errors
    assert db.execute("SELECT count(*) FROM system_log").fetchone() == (0,)


def test_emit_never_blocks_on_a_writer_that_waits(dl_pool: DataLayerPool) -> None:
    # Sanity bound: emit stays cheap even while the writer is stuck behind a lock.
    handler = SystemLogHandler(service="cheap", pool=dl_pool, capacity=5000, flush_interval=0.02)
    log = _logger("cheap", handler)
    try:
        with connection(dl_pool) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE system_log IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            for i in range(2000):
                log.info("n %d", i, extra={"path": BAD})
            elapsed = time.monotonic() - t0
            locker.execute("ROLLBACK")
        assert handler.drain(20)
    finally:
        handler.close()
    assert elapsed < 2.0, f"emit blocked: {elapsed:.2f}s for 2000 records"
    assert handler.written == 2000


def test_non_finite_floats_in_extra_are_stored_as_their_repr(dl_pool: DataLayerPool) -> None:
    # JSON has no NaN or infinity; orjson would write null. Alone in extra= (nothing else forcing the
    # cleaning path) they are stored as their repr, as the README says, and finite floats stay numbers.
    handler = SystemLogHandler(service="floats", pool=dl_pool, flush_interval=0.02)
    log = _logger("floats", handler)
    try:
        log.info("flat", extra={"a": float("inf"), "b": float("nan"), "c": -0.0, "d": 1.5, "e": None})
        log.info("nested", extra={"nested": {"x": float("nan"), "y": [float("-inf"), 2.5]}})
        assert handler.drain(15), f"stuck with {handler.pending()} pending"
    finally:
        handler.close()
    rows = {r.message: r.details for r in _messages(dl_pool, "floats")}
    assert (rows["flat"]["a"], rows["flat"]["b"], rows["flat"]["c"]) == ("inf", "nan", -0.0)
    assert rows["flat"]["d"] == 1.5 and rows["flat"]["e"] is None
    assert rows["nested"]["nested"] == {"x": "nan", "y": ["-inf", 2.5]}
