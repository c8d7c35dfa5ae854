"""One source, two APIs: every sync module generated from an ``*_async.py`` source is up to date, and
``tools/async_to_sync.py --check`` (what CI runs) fails when one is not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

TOOL = ROOT / "tools" / "async_to_sync.py"
PACKAGE = ROOT / "datalayer"
HEADER = "# Generated from {source} by tools/async_to_sync.py: edit that file, then run the tool.\n"


def _sources(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*_async.py") if "__pycache__" not in p.parts)


def _twin(source: Path) -> Path:
    return source.with_name(source.name.removesuffix("_async.py") + ".py")


def _run(tool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(tool), *args], cwd=tool.parent.parent, capture_output=True, text=True, timeout=300,
        check=False,
    )


def test_the_sync_modules_are_up_to_date() -> None:
    r = _run(TOOL, "--check")
    assert r.returncode == 0, f"stale generated modules (run: python tools/async_to_sync.py):\n{r.stderr}"


def test_every_source_has_its_generated_twin_and_every_generated_module_a_source() -> None:
    sources = _sources(PACKAGE)
    assert {p.name for p in sources} >= {"users_async.py", "analyses_async.py", "cache_entries_async.py"}
    for source in sources:
        twin = _twin(source)
        assert twin.exists(), f"{source.relative_to(ROOT)} has no generated {twin.name}"
        first = twin.read_text(encoding="utf-8").splitlines(keepends=True)[0]
        assert first == HEADER.format(source=source.relative_to(ROOT).as_posix())
    generated = [p for p in PACKAGE.rglob("*.py") if p.read_text(encoding="utf-8").startswith("# Generated from ")]
    orphans = [p for p in generated if not p.with_name(p.stem + "_async.py").exists()]
    assert not orphans, f"generated modules whose source is gone: {orphans}"


def test_the_check_fails_on_a_hand_edit_and_the_tool_repairs_it(tmp_path: Path) -> None:
    # A copy of the package and the tool (with the ruff settings the tool formats and sorts imports by).
    tool = tmp_path / "tools" / "async_to_sync.py"
    tool.parent.mkdir()
    shutil.copy(TOOL, tool)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PACKAGE, tmp_path / "datalayer", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    assert _run(tool, "--check").returncode == 0
    users = tmp_path / "datalayer" / "repos" / "users.py"
    generated = users.read_text(encoding="utf-8")
    users.write_text(generated.replace("return _get_by_id.maybe(", "return _get_by_id.one("), encoding="utf-8")
    assert users.read_text(encoding="utf-8") != generated
    stale = _run(tool, "--check")
    assert stale.returncode == 1
    assert "datalayer/repos/users.py: stale" in stale.stderr and "run: python tools/async_to_sync.py" in stale.stderr
    assert _run(tool).returncode == 0
    assert users.read_text(encoding="utf-8") == generated
    assert _run(tool, "--check").returncode == 0


def test_a_query_bound_by_a_source_and_its_twin_counts_once(tmp_path: Path) -> None:
    # check reads bindings(): what users_async binds exactly as users does is one binding, the twin's.
    from datalayer import sql
    from datalayer._run import bind_query

    users = {b.module for b in sql.bindings() if b.domain == "users"}
    assert "datalayer.repos.users" in users and "datalayer.repos.users_async" not in users
    f = tmp_path / "twins.sql"
    f.write_text("-- name: one_row :scalar\nSELECT 1;\n")
    queries = sql.load(f)
    alone = bind_query(queries, "one_row", int, module="svc.alone_async")  # no twin: it counts
    source = bind_query(queries, "one_row", int, module="svc.notes_async")
    twin = bind_query(queries, "one_row", int, module="svc.notes")
    other = bind_query(queries, "one_row", str, module="svc.notes_async")  # another result type: its own
    found = sorted((b.module, b.result.__name__) for b in sql.bindings() if b.domain == "twins" and b.result)
    assert found == [("svc.alone_async", "int"), ("svc.notes", "int"), ("svc.notes_async", "str")]
    del twin  # the twin gone, the source's binding counts again
    found = sorted((b.module, b.result.__name__) for b in sql.bindings() if b.domain == "twins" and b.result)
    assert found == [("svc.alone_async", "int"), ("svc.notes_async", "int"), ("svc.notes_async", "str")]
    assert alone.query.name == source.query.name == other.query.name == "one_row"
