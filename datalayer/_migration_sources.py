"""A project's migration sources and the rules that hold across them.

* Migration ids (file stems: yoyo keys migrations by them) are unique across sources.
* With ``builtin = true`` the first migration of each service folder depends on a built-in one, so that
  plain ``yoyo apply`` orders them right too (``datalayer migrate`` applies a whole source at a time).
* A database keeps the ``builtin`` setting it was first migrated with.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from datalayer import _ledger
from datalayer import project as _project
from datalayer.errors import MigrationError
from datalayer.project import MigrationSource, Project, find_project

__all__ = [
    "builtin_switch_problem",
    "check_builtin_switch",
    "check_sources",
    "depends_of",
    "depends_problems",
    "duplicate_problems",
    "hook_source",
    "in_order",
    "plan_lines",
    "read_sources",
    "source_dirs",
]


def source_dirs(sources: Iterable[MigrationSource]) -> dict[str, Path]:
    """{source name: folder}, in apply order, as the ledger takes them."""
    return {s.name: s.path for s in sources}


def _shown(source: MigrationSource, path: Path) -> str:
    return f"{path} (datalayer's built-in migrations)" if source.builtin else f"{source.name}/{path.name}"


def duplicate_problems(sources: Sequence[MigrationSource]) -> list[str]:
    """A message for every migration id defined in two sources."""
    seen: dict[str, tuple[MigrationSource, Path]] = {}
    problems = []
    for source in sources:
        for mid, path in _ledger.migration_files(source.path).items():
            if mid not in seen:
                seen[mid] = (source, path)
                continue
            first_source, first = seen[mid]
            service = source if first_source.builtin else first_source
            problems.append(
                f"migration id {mid} is defined twice: {_shown(first_source, first)} and {_shown(source, path)} "
                "(yoyo keys migrations by file name, so one would hide the other); rename the service's file "
                f"with a prefix of the service's own, e.g. {service.name}/<service>-{path.name} (and its "
                "rollback and any -- depends: naming it)"
            )
    return problems


def depends_of(path: Path) -> set[str]:
    """The migration ids a migration file depends on (``-- depends:`` in SQL, ``__depends__`` in Python)."""
    if path.suffix == ".sql":
        from yoyo.migrations import read_sql_migration

        directives, _, _ = read_sql_migration(str(path))
        return set(directives.get("depends", "").split())
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise MigrationError(f"cannot read {path}: {e.msg} at line {e.lineno}; fix the migration") from None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == "__depends__" for t in targets):
            continue
        try:
            found = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError):
            found = None
        if isinstance(found, str):
            return {found}
        if isinstance(found, (set, list, tuple, frozenset)) and all(isinstance(v, str) for v in found):
            return set(found)
        raise MigrationError(
            f"cannot read __depends__ of {path}: write it as a literal set of migration ids, "
            'e.g. __depends__ = {"0001.orders"}'
        )
    return set()


def depends_problems(sources: Sequence[MigrationSource]) -> list[str]:
    """With a built-in source (``builtin = true``): a message for each service folder whose first migration
    (in file order) names no built-in migration (nor one of an earlier folder) in its depends, saying
    what to add. Empty without a built-in source."""
    builtin = [s for s in sources if s.builtin]
    if not builtin:
        return []
    builtin_ids = set(_ledger.migration_files(builtin[0].path))
    if not builtin_ids:
        return []
    latest = max(builtin_ids)  # built-in ids sort in the order they apply
    earlier = set(builtin_ids)
    problems = []
    for source in (s for s in sources if not s.builtin):
        files = _ledger.migration_files(source.path)
        if not files:
            continue
        path = next(iter(files.values()))
        try:
            deps = depends_of(path)
        except MigrationError as e:
            problems.append(str(e))
            deps = earlier  # reported; no second message for it
        if not deps & earlier:
            if path.suffix == ".sql":
                fix = (
                    f"add {latest} to its -- depends: line"
                    if deps
                    else f"add the line `-- depends: {latest}` at its top"
                )
            else:
                fix = (
                    f'add "{latest}" to its __depends__'
                    if deps
                    else f'add `__depends__ = {{"{latest}"}}` at module level'
                )
            problems.append(
                f"{source.name}/{path.name} is the first migration of {source.name}/ and builtin = true, so it must "
                f"depend on a built-in migration (so that plain yoyo apply orders them right): {fix}"
            )
        earlier |= files.keys()
    return problems


def check_sources(sources: Sequence[MigrationSource]) -> None:
    """MigrationError, before anything is applied, for duplicate ids across sources and (builtin = true)
    service migrations that do not depend on the built-in schema."""
    problems = duplicate_problems(sources)
    if not problems:
        problems = depends_problems(sources)
    if problems:
        raise MigrationError("; ".join(problems))


def read_sources(sources: Sequence[MigrationSource]) -> list[tuple[MigrationSource, Any]]:
    """Each source with its yoyo MigrationList, in apply order (read one by one: ids are checked unique)."""
    from yoyo import read_migrations

    return [(s, read_migrations(str(s.path))) for s in sources]


def builtin_switch_problem(conn: psycopg.Connection[Any], project: Project) -> str | None:
    """Why ``project`` must not migrate this database (its ``builtin`` differs from the database's), or None.

    Whether a database has the built-in schema is read from the ledger's sources (for rows it lacks, from
    whether the id is a built-in one).
    """
    done = _ledger.applied(conn)
    if not done:
        return None
    ledger = _ledger.entries(conn)
    builtin_ids = set(_ledger.migration_files(_project.builtin_migrations_dir()))
    has_builtin = any(
        ledger[mid].source == _ledger.BUILTIN_SOURCE if mid in ledger else mid in builtin_ids for mid in done
    )
    if has_builtin == project.builtin:
        return None
    pyproject = project.root / "pyproject.toml"
    if has_builtin:
        return (
            "this database was migrated with the built-in schema (builtin = true); the project now says "
            f"builtin = false ({pyproject}): its migrations would run beside tables it does not know, and "
            "a rollback would leave them behind; set builtin = true in [tool.datalayer] again, or migrate "
            "a new, empty database"
        )
    return (
        "this database was migrated without the built-in schema (builtin = false); the project now says "
        f"builtin = true ({pyproject}{'' if project.declared else ', the default without [tool.datalayer]'}): "
        "the built-in tables would be added under a ledger that never had them; set builtin = false in "
        "[tool.datalayer] again, or migrate a new, empty database"
    )


def check_builtin_switch(conn: psycopg.Connection[Any], project: Project) -> None:
    """MigrationError when the project's ``builtin`` differs from the database's."""
    problem = builtin_switch_problem(conn, project)
    if problem:
        raise MigrationError(problem)


def hook_source(directory: Path) -> str:
    """The source name a folder's post-apply hook records under: the one ``datalayer migrate`` uses.

    The folder's own project is found from the folder (a hook runs wherever yoyo was started).
    """
    directory = directory.resolve()
    if directory == _project.builtin_migrations_dir().resolve():
        return _ledger.BUILTIN_SOURCE
    project = find_project(directory, environ={})
    for source in project.migration_sources():
        if source.path.resolve() == directory:
            return source.name
    try:
        return directory.relative_to(project.root.resolve()).as_posix()
    except ValueError:
        return directory.as_posix()


def in_order(backend: Any, sources: list[MigrationSource], *, rollback: bool = False) -> Any:
    """What to apply (or roll back) over every source, a whole source at a time: built-in first (last)."""
    from yoyo.migrations import MigrationList

    read = read_sources(sources)
    items: list[Any] = []
    for _, migrations in reversed(read) if rollback else read:
        items += backend.to_rollback(migrations) if rollback else backend.to_apply(migrations)
    return MigrationList(items, [hook for _, migrations in read for hook in migrations.post_apply])


def plan_lines(sources: Sequence[MigrationSource], applied: Iterable[str]) -> list[str]:
    """The SQL of every migration not in ``applied``, source by source in apply order, with a header each."""
    from yoyo.migrations import topological_sort

    done = set(applied)
    out: list[str] = []
    for source, migrations in read_sources(sources):
        for m in topological_sort(m for m in migrations if m.id not in done):
            m.load()
            where = "built-in" if source.builtin else f"{source.name}/"
            out.append(
                f"-- migration {m.id} ({where}, {'one transaction' if m.use_transactions else 'no transaction'})"
            )
            out.append("BEGIN;" if m.use_transactions else "")
            for wrapper in m.steps:
                out += [stmt.strip().rstrip(";") + ";" for stmt in _step_sql(wrapper)]
            out.append("COMMIT;" if m.use_transactions else "")
    return out


def _step_sql(wrapper: Any) -> Iterator[str]:
    inner = getattr(wrapper, "step", wrapper)
    if hasattr(inner, "steps"):
        for s in inner.steps:
            yield from _step_sql(s)
        return
    apply = getattr(inner, "_apply", None)
    if isinstance(apply, str):
        yield apply
    elif callable(apply):  # a Python step: only named, it cannot be printed ahead
        name = getattr(apply, "__qualname__", "step")
        yield f"-- python step {name}: its SQL depends on the data; datalayer migrate runs it"
