"""``datalayer check``: every named query of a project verified against a migrated database.

For each query a module binds to a record type, ``check`` prepares the statement on the server,
describes it (parameter and result types) and compares the result columns with the record's fields:
names, order (the order the row maker fills them), Python type against the PostgreSQL type, nullability
(of the value, of array elements, of keys of json shaped into nested records). It reads the source of the
project's modules to check that each call passes exactly the parameters its query uses with the method
matching its cardinality, and reports queries nothing binds and bindings whose query is missing.

Nullability is proven, never guessed: a column is NOT NULL when its source is (a validated NOT NULL or a
NOT NULL domain, outside the nullable side of an outer join) or the expression provably is (``count(*)``,
``coalesce(x, 0)``, ``x IS NULL``, ``LIKE``/``IN``/``BETWEEN`` of non-NULL operands, a vetted list of
functions …). Everything else may be NULL, and the finding says why; where the query knows better, it
says so in an annotation (several lines add up)::

    -- not-null: total_bytes: pg_total_relation_size() of an existing relation is never NULL

What check cannot see (calls with ``**kwargs``, through ``functools.partial`` or a helper; json it cannot
read the shape of) is reported as a note (``Finding.note``), not a failure: the run time checks exact
parameters on every call, and the test plugin's strict mode checks every record a query builds.

Every finding names ``<file>.sql:<line>`` relative to the project root, the query and the field.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import sql

from datalayer._check_calls import Use, find_uses, is_bound, sync_method
from datalayer._check_catalog import Catalog
from datalayer._check_query import Finding, check_query, not_null_annotations
from datalayer._default_target import resolve_database
from datalayer.config import DatabaseTarget, Settings
from datalayer.errors import ConfigError
from datalayer.project import Project, builtin_sql_dir, find_project, project_importable
from datalayer.sql import bindings, load

__all__ = ["Finding", "check", "check_contracts", "check_scratch"]

_METHOD_FOR = {"one": "one", "maybe": "maybe", "many": "many", "scalar": "scalar", "exec": "exec", "copy": "copy"}


def _query_files(module: types.ModuleType) -> Iterable[Any]:
    for value in vars(module).values():
        if hasattr(value, "queries") and isinstance(getattr(value, "path", None), Path):
            yield value


def check_contracts(
    conn: psycopg.Connection[Any],
    bound: Sequence[Any],
    queries: Sequence[Any],
    *,
    modules: Iterable[types.ModuleType] = (),
    root: Path | None = None,
    paths: dict[tuple[str, str], Path] | None = None,
    notes: bool = False,
    quiet: Iterable[str] = (),
) -> list[Finding]:
    """Every finding for the ``bound`` queries, plus each of ``queries`` that nothing binds.

    Call sites are read from the modules that bound the queries and from ``modules``; ``root`` is what
    file names are relative to (the working directory by default); with ``notes``, what check could not
    verify is listed too (as ``Finding(note=True)``), except about queries bound in ``quiet`` modules
    (datalayer's own: their notes are nothing a project can act on; their findings mean a broken install).
    """
    try:
        import pglast  # noqa: F401
    except ImportError:
        raise ConfigError(
            "datalayer check needs pglast: pip install 'sqlfirst-datalayer[check]' (or '.[check]' from a checkout)"
        ) from None
    catalog = Catalog(conn)
    quiet = tuple(quiet)
    base = root or Path.cwd()
    scanned = {m.__name__: m for m in modules}
    sources = dict(paths or {})
    for b in bound:
        module = sys.modules.get(b.module) or importlib.import_module(b.module)
        scanned.setdefault(module.__name__, module)
        for qf in _query_files(module):
            for q in qf.queries.values():
                sources.setdefault((str(q.file), str(q.name)), qf.path)
    failures: list[str] = []
    uses = find_uses(scanned.values(), lambda p: _relative(p, base), failures)
    findings = [Finding(f.partition(":")[0], f"could not read the call sites: {f}") for f in failures]
    seen: set[tuple[str, str]] = set()
    results: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for b in bound:
        if b.query is not None:
            results.setdefault((str(b.query.file), str(b.query.name)), set()).add((b.module, id(b.result)))
    done: set[tuple[str, str, int]] = set()
    for n, b in enumerate(bound):
        if b.query is None:
            where = getattr(b, "file", None) or f"sql/{b.domain}.sql"
            findings.append(Finding(str(where), f"{b.module} binds query {b.name!r}, which the file does not define"))
            continue
        key = (str(b.query.file), str(b.query.name))
        # Every binding is checked on its own: one query bound to two records must match both.
        if (*key, id(b.result)) in done:
            continue
        done.add((*key, id(b.result)))
        own = _quiet(b.module, quiet)
        try:
            path = sources.get(key) or _source_path(b.query, base)
            found = check_query(conn, catalog, b, n, not_null_annotations(b.query, path))
        except Exception as e:  # one query's analysis must never stop the check: it becomes a finding
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                conn.rollback()
            found = [Finding(b.query.location, f"could not analyse: {type(e).__name__}: {e}")]
        if len(results[key]) > 1:  # say which binding a finding is about
            shown = f"{b.query.location} (bound to {getattr(b.result, '__name__', b.result)} in {b.module})"
            found = [dataclasses.replace(f, location=shown) if f.location == b.query.location else f for f in found]
        findings += [f for f in found if not (own and f.note)]
        if key not in seen:
            seen.add(key)
            findings += [f for f in _check_uses(b, uses.get(key, [])) if not (own and f.note)]
    for q in queries:
        if (str(q.file), str(q.name)) not in seen:
            findings.append(Finding(q.location, "no function uses this query; bind it in a module or delete it"))
    return findings if notes else [f for f in findings if not f.note]


def _quiet(module: str, quiet: Iterable[str]) -> bool:
    return any(module == m or module.startswith(m + ".") for m in quiet)


def _source_path(query: Any, root: Path) -> Path | None:
    """The file a query was read from (its annotations are re-read there: two lines of a key add up)."""
    file = Path(str(query.file))
    candidates = [file] if file.is_absolute() else [root / file, Path.cwd() / file]
    if file.parts[:1] == ("sql",):
        candidates.append(builtin_sql_dir().joinpath(*file.parts[1:]))
    for path in candidates:
        try:
            lines = path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        line = int(query.line)
        if 0 < line <= len(lines) and f"name: {query.name}" in lines[line - 1]:
            return path
    return None


def _check_uses(b: Any, uses: list[Use]) -> list[Finding]:
    query = b.query
    if not uses:
        return [Finding(query.location, f"is bound in {b.module} but never called")]
    findings: list[Finding] = []
    expected = _METHOD_FOR[query.cardinality]
    for use in uses:
        where = f"{query.location} (called at {use.where})"
        method = None if use.method is None else sync_method(use.method)
        if method is not None and method != expected and not (expected == "copy" and method == "copy_in"):
            wanted = expected if method == use.method else f"a{expected}"
            findings.append(
                Finding(where, f"is declared :{query.cardinality} but called with .{use.method}(); use .{wanted}()")
            )
        if query.cardinality == "copy" or (use.method is None and use.unverifiable is None):
            continue
        if use.positional:
            findings.append(Finding(where, "passes parameters by position; pass each by name"))
        extra = sorted(use.kwargs - set(query.params))
        if extra:
            findings.append(Finding(where, f"parameter(s) {', '.join(extra)} passed but not used by the query"))
        if use.unverifiable is not None or use.splat:
            why = use.unverifiable or "called with **kwargs"
            findings.append(
                Finding(where, f"unverifiable: {why}; the run time checks its parameters on every call", note=True)
            )
            continue
        missing = [p for p in query.params if p not in use.kwargs]
        if missing:
            findings.append(
                Finding(
                    where,
                    f"missing parameter(s) {', '.join(':' + p for p in missing)} "
                    "(the query uses them, the call does not pass them)",
                )
            )
    return findings


def _relative(path: str, root: Path) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


# ------------------------------------------------------------------------------------------ driver


def _project(project: Project | None) -> Project:
    return find_project() if project is None else project


def _is_test_module(name: str, file: Path, root: Path) -> bool:
    parts = file.relative_to(root).parts
    return bool(set(parts[:-1]) & {"tests", "test", ".venv", "venv", "site-packages"}) or parts[-1] == "conftest.py"


def _under(module: types.ModuleType | None, root: Path) -> bool:
    source = getattr(module, "__file__", None)
    return bool(source) and Path(str(source)).resolve().is_relative_to(root.resolve())


def check(db: psycopg.Connection[Any], *, project: Project | None = None, notes: bool = False) -> list[Finding]:
    """Check every query of ``project`` (default: the one found from the working directory) on ``db``.

    Imports the project's modules (its root on ``sys.path``), then checks every binding whose module is
    one of them or whose SQL file is in one of the project's SQL folders, and reports each query of those
    folders that nothing binds. ``[]`` means all good; ``notes`` adds what could not be verified.

    >>> assert check(db) == []            # doctest: +SKIP
    """
    proj = _project(project)
    root = proj.root
    findings: list[Finding] = []
    names = proj.check_modules()
    with project_importable(proj):
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as e:  # a module that cannot import is a finding, not a crash
                findings.append(Finding(name, f"cannot import module {name}: {type(e).__name__}: {e}"))
    queries: list[Any] = []
    paths: dict[tuple[str, str], Path] = {}
    for folder in proj.sql_folders():
        for file in sorted(Path(folder).glob("*.sql")):
            for q in load(file).queries.values():
                queries.append(q)
                paths[(str(q.file), str(q.name))] = file
    ours = [
        b
        for b in bindings()
        if any(b.module == m or b.module.startswith(m + ".") for m in names)
        or (b.query is not None and (str(b.query.file), str(b.query.name)) in paths)
    ]
    modules = [sys.modules[n] for n in names if n in sys.modules]
    for mod in list(sys.modules.values()):
        source = getattr(mod, "__file__", None)
        if not source or not any(is_bound(v) for v in vars(mod).values() if not isinstance(v, type)):
            continue
        path = Path(source).resolve()
        if path.is_relative_to(root) and not _is_test_module(mod.__name__, path, root):
            modules.append(mod)
    # Notes about datalayer's own repositories are nothing a project can act on (unless it is datalayer).
    quiet = [m for m in names if m not in proj.modules and not _under(sys.modules.get(m), root)]
    findings += check_contracts(db, ours, queries, modules=modules, root=root, paths=paths, notes=notes, quiet=quiet)
    return findings


def check_scratch(
    settings: Settings | None = None, *, project: Project | None = None, notes: bool = False
) -> list[Finding]:
    """What ``datalayer check`` runs: migrate a scratch database with the project's sources, check, drop it."""
    from datalayer.migrate import setup_database
    from datalayer.pool import connect

    proj = _project(project)
    settings = settings or Settings.from_env()
    # CREATE DATABASE, migrations and DROP need the server itself (DATABASE_DIRECT_URL behind a pooler);
    # the scratch database is then reached directly, with no pooler in between.
    target = settings.direct_target(resolve_database(settings))
    settings = attrs.evolve(settings, pooler="none", direct=None)
    scratch = f"datalayer_check_{os.getpid()}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
    # Bounded connections (CONNECT_TIMEOUT, keepalives, a deadline per wait): a mute server cannot hang CI.
    with connect(settings, target) as admin:
        admin.execute(drop)
        admin.execute(create)
    try:
        scratch_target = DatabaseTarget(params={**target.params, "dbname": scratch}, password=target.password)
        setup_database(settings=settings, target=scratch_target, partitions_ahead=2, project=proj)
        with connect(settings, scratch_target) as conn:
            return check(conn, project=proj, notes=notes)
    finally:
        with connect(settings, target) as admin:
            admin.execute(drop)
