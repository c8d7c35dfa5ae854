"""Static types reach the caller: the sample service passes mypy --strict, and misuse is reported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datalayer.pool import DataLayerPool

HERE = Path(__file__).parent / "typing"
ROOT = Path(__file__).parent.parent


def _mypy(*files: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(cache), *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )


@pytest.mark.slow
def test_sample_service_and_misuse(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("mypy-cache")
    ok = _mypy(HERE / "sample_service.py", HERE / "async_sample_service.py", cache=cache)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad = _mypy(HERE / "misuse.py", cache=cache)
    reported: dict[int, set[str]] = {}
    for line in bad.stdout.splitlines():
        m = re.match(r".*misuse\.py:(\d+): error: .*\[([a-z-]+)\]$", line)
        if m:
            reported.setdefault(int(m.group(1)), set()).add(m.group(2))
    expected = {
        n: code
        for n, text in enumerate((HERE / "misuse.py").read_text().splitlines(), start=1)
        if (code := (re.search(r"# E: ([a-z-]+)", text) or [None, None])[1])
    }
    assert len(expected) >= 8
    for line, code in expected.items():
        assert code in reported.get(line, set()), f"misuse.py:{line} should report [{code}]; mypy said:\n{bad.stdout}"
    unexpected = set(reported) - set(expected)
    assert not unexpected, f"unexpected errors on lines {sorted(unexpected)}:\n{bad.stdout}"


def test_sample_service_runs(dl_pool: DataLayerPool, redis_target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datalayer.cache import close_cache_manager

    monkeypatch.setenv("REDIS_URL", redis_target.url)
    monkeypatch.setenv("CACHE_PREFIX", f"sample{os.getpid()}")
    close_cache_manager()  # the sample builds the process-wide cache from these settings
    sys.path.insert(0, str(HERE))
    try:
        import sample_service
    finally:
        sys.path.remove(str(HERE))
    out: dict[str, Any] = sample_service.run(dl_pool)
    assert out["health"] == "healthy"
    assert out["findings"] == []
    assert out["analysis_ok"] is True
    assert all(applied and not changed for _, applied, changed in out["migrations"])
    assert out["result"] == {"rows": 3} and out["types"] == ["csv"] and out["deleted"] is True
    assert out["events"] == 6 and out["levels"] == {"DEBUG": 3, "INFO": 1, "ERROR": 1, "WARNING": 1}
    assert out["cache_removed"] == 2 and out["cache_left"] == 0
    assert out["backup"] is True and out["refused"] is True and out["applied"] == []
    assert out["cached_equal"] is True and out["seed_result"] == {"result": "data"} and out["l1_hits"] >= 1
    close_cache_manager()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_sample_service_runs(adl_pool: Any, redis_target: Any, monkeypatch: pytest.MonkeyPatch,
                                         anyio_backend: str) -> None:
    """The README's examples in their async form (datalayer.aio), run for real."""
    from datalayer.aio import close_cache_manager

    monkeypatch.setenv("REDIS_URL", redis_target.url)
    monkeypatch.setenv("CACHE_PREFIX", f"asample{os.getpid()}")
    sys.path.insert(0, str(HERE))
    try:
        import async_sample_service
    finally:
        sys.path.remove(str(HERE))
    try:
        out: dict[str, Any] = await async_sample_service.run()
    finally:
        await close_cache_manager()
    assert out["same"] is True and out["inactive"] is True and out["listed"] == 1 and out["total"] == 1
    assert out["conflict"] == "username" and out["login"] is True
    assert out["result"] == {"rows": 1200} and out["files"] is True and out["types"] == ["csv"]
    assert out["listed"] == 1 and out["generations"] is True
    assert out["event"] == "hello" and out["found"] == 4 and out["stored"] is True
    assert out["seed_result"] == {"result": "data"} and out["cached"] is True and out["fresh"] is True
    assert out["count"] == 3 and out["dependency"] == 3
    assert len(out["events"]) == 1 and str(out["events"][0]).startswith("welcome ")
