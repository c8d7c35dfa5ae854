"""A project's migration sources and the rules that hold across them.

* Migration ids (file stems: yoyo keys migrations by them) are unique across sources.
* With ``builtin = true`` the first migration of each service folder depends on a built-in one, so that
  plain ``yoyo apply`` orders them right too (``datalayer migrate`` applies a whole source at a time).
* A database keeps the ``builtin`` setting it was first migrated with.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from datalayer import _ledger
from datalayer import project as _project
from datalayer.errors import MigrationError
from datalayer.project import MigrationSource, Project, find_project

__all__ = [
    "apply_recorded",
    "builtin_switch_problem",
    "check_builtin_switch",
    "check_sources",
    "depends_of",
    "depends_problems",
    "duplicate_problems",
    "hook_source",
    "hook_step",
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

    The database has the built-in schema when an applied id is a built-in one (its ledger row's source, else
    the id), or when yoyo's log shows built-in migrations applied when its earliest applied migration was:
    a database whose built-in migrations were rolled back from under a service's is still a built-in one.
    """
    done = _ledger.applied(conn)
    if not done:
        return None
    ledger = _ledger.entries(conn)
    builtin_ids = set(_ledger.migration_files(_project.builtin_migrations_dir()))
    builtin_ids -= {mid for mid, e in ledger.items() if e.source != _ledger.BUILTIN_SOURCE}
    has_builtin = any(
        ledger[mid].source == _ledger.BUILTIN_SOURCE if mid in ledger else mid in builtin_ids for mid in done
    ) or _ledger.builtin_in_use_at(conn, builtin_ids, min(done.values()))
    if has_builtin == project.builtin:
        return None
    pyproject = project.root / "pyproject.toml"
    if has_builtin:
        return (
            "this database was migrated with the built-in schema (builtin = true); the project now says "
            f"builtin = false ({project.origin()}): its migrations would run beside tables it does not know, and "
            f"a rollback would leave them behind; set builtin = true in [tool.datalayer] of {pyproject}, or "
            "migrate a new, empty database"
        )
    return (
        "this database was migrated without the built-in schema (builtin = false); the project now says "
        f"builtin = true ({project.origin()}): "
        f"the built-in tables would be added under a ledger that never had them; set builtin = false in "
        f"[tool.datalayer] of {pyproject}, or migrate a new, empty database"
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


def _shown_file(migration: Any, files: dict[str, tuple[str, str]]) -> str:
    source = files.get(migration.id, (None,))[0]
    path = Path(migration.path)
    return str(path) if source in (None, _ledger.BUILTIN_SOURCE) else f"{source}/{path.name}"


def apply_recorded(
    backend: Any, conn: psycopg.Connection[Any], pending: Any, sources: dict[str, Path], where: str
) -> None:
    """Apply ``pending`` (``in_order``) one migration at a time, each recorded in the ledger as soon as yoyo
    has applied it (the file content read before applying), then the post-apply hooks.

    A failure is a MigrationError naming the migration and its file: the ones before it stay applied and
    recorded, so a later edit of theirs is caught.
    """
    files = _ledger.snapshot(sources)
    since = datetime.now(UTC).replace(tzinfo=None)  # yoyo stamps applications with this clock
    done: list[str] = []
    for m in pending:
        try:
            backend.apply_one(m)
        except Exception as e:
            before = f"; applied and recorded before it: {', '.join(done)}" if done else ""
            undo = (
                "its changes were rolled back"
                if m.use_transactions
                else "it runs outside a transaction: check what it left"
            )
            raise MigrationError(
                f"migrating {where} failed at migration {m.id} ({_shown_file(m, files)}): {_describe(e)}"
                f"{before}; {undo}, fix it and migrate again"
            ) from e
        done.append(m.id)
        with conn.transaction():
            _ledger.record(conn, sources, files=files, since=since)
    for hook in pending.post_apply if done else []:  # as yoyo: hooks run when something was applied
        try:
            backend.apply_one(hook, mark=False)
        except Exception as e:
            raise MigrationError(
                f"the post-apply hook {hook.path} failed after applying {', '.join(done)} to {where} "
                f"(applied and recorded): {_describe(e)}"
            ) from e
    with conn.transaction():  # also records an application this run did not make (with a warning)
        _ledger.record(conn, sources, files=files, since=since)


def _describe(e: Exception) -> str:
    from datalayer._translate import describe_error

    return str(e) if isinstance(e, MigrationError) else describe_error(e)


def hook_step(conn: psycopg.Connection[Any], directory: Path) -> None:
    """The body of ``ledger_steps``: record what yoyo applied from ``directory``, then verify its files.

    yoyo runs post-apply hooks after applying, in a transaction it rolls back when the hook fails, so the
    record is written on a connection of its own: a refusal then leaves what yoyo applied recorded.
    """
    sources = {hook_source(directory): directory}
    since = _ledger.yoyo_lock_time(conn)  # taken by this yoyo apply before it applied anything
    with psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True) as apart:
        with apart.transaction():
            recorded = _ledger.record(apart, sources, since=since)
        issues = _ledger.changed(apart, sources, whole_project=False)
        ran = _ledger.applied_since(apart, since) if since is not None else recorded
    if not issues:
        return
    files = _ledger.migration_files(directory)
    refused = "; ".join(
        (
            f"the edited file {_ledger.source_label(i.source)}{files[i.migration_id].name}"
            if i.migration_id in files
            else f"applied migration {i.migration_id}"
        )
        + f" was refused: {i.describe()}"
        for i in issues
    )
    others = [mid for mid in ran if mid not in recorded]
    applied_text = (
        f"this yoyo apply applied {', '.join(ran)} (recorded in the ledger: {', '.join(recorded) or 'none'}"
        + (
            f"; {', '.join(others)} belong to other folders, whose own hook or `datalayer migrate` records them"
            if others
            else ""
        )
        + ")"
        if ran
        else "this yoyo apply applied nothing new"
    )
    raise MigrationError(
        f"{applied_text}; {refused}. Plain yoyo apply runs this check only after applying; "
        "`datalayer migrate` checks before applying anything"
    )


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
