"""A project's tables and their facts: what backup/restore, roles and stats work over.

A ``Registry`` lists tables in foreign-key order (parents first) and maps each constraint to the
table and input field it guards. A service reads its registry from its migrated database
(``registry_from_catalog``), or declares one with facts the catalog cannot hold (a column computed
in Python, a table partitioned by day, columns the read-only role may not see) and ``register``\\ s
it; the built-in schema does the same (``datalayer.builtin_schema``).

>>> reg = Registry(tables=(Table("notes"),), constraint_fields={"notes_title_key": ("notes", "title")})
>>> reg.names
('notes',)
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
import psycopg

from datalayer._translate import register_constraint_fields
from datalayer.errors import ValidationError

if TYPE_CHECKING:
    from datalayer.project import Project

__all__ = [
    "DayPartitions",
    "Derived",
    "Registry",
    "Table",
    "register",
    "registered",
    "registry_from_catalog",
    "resolve_registry",
]

# Tables of the migration runner itself (yoyo's and the checksum ledger), never a project's data.
_BOOKKEEPING_PREFIXES = ("_yoyo", "yoyo_", "datalayer_migration")


@attrs.frozen
class Derived:
    """A column computed in Python from another column of the same row (recomputed on restore)."""

    source: str
    compute: Callable[[str], str]


@attrs.frozen
class DayPartitions:
    """A table range-partitioned by the UTC day of ``column``; ``ensure(db, day)`` makes a day's partition."""

    column: str
    ensure: Callable[[psycopg.Connection[Any], date], object]


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def _names(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ValidationError({"names": f"must be a list of names, got the string {value!r}"})
    return tuple(value)


def _tables(value: Iterable[Table]) -> tuple[Table, ...]:
    tables = tuple(value)
    bad = next((t for t in tables if not isinstance(t, Table)), None)
    if bad is not None:
        raise ValidationError({"tables": f"must hold datalayer.registry.Table records, got {type(bad).__name__}"})
    return tables


@attrs.frozen
class Table:
    """One table and what the tools need to know about it beyond the catalog.

    ``references``: the tables its foreign keys point at. ``backed_up``: False for transient state a
    backup leaves out. ``append_only``: the application role may SELECT and INSERT only.
    ``secret_columns``: columns the read-only role may not read. ``readonly_hidden``: the read-only
    role may not read the table at all. ``derived``: columns computed in Python on restore.
    """

    name: str
    references: tuple[str, ...] = attrs.field(default=(), converter=_names)
    backed_up: bool = True
    append_only: bool = False
    secret_columns: tuple[str, ...] = attrs.field(default=(), converter=_names)
    readonly_hidden: bool = False
    derived: Mapping[str, Derived] = attrs.field(factory=dict, converter=_frozen_map, eq=False)
    day_partitions: DayPartitions | None = attrs.field(default=None, eq=False)

    @property
    def partitioned_by_day(self) -> bool:
        return self.day_partitions is not None


@attrs.frozen
class Registry:
    """Tables in foreign-key order (parents first) and constraint -> (table, field)."""

    tables: tuple[Table, ...] = attrs.field(converter=_tables)
    constraint_fields: Mapping[str, tuple[str, str]] = attrs.field(factory=dict, converter=_frozen_map)

    def __attrs_post_init__(self) -> None:
        names = [t.name for t in self.tables]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise ValidationError({"tables": f"table {twice} is listed twice"})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    @property
    def backed_up(self) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.backed_up)

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)

    def overlaid(self, facts: Registry) -> Registry:
        """This registry's tables and order, each with the facts ``facts`` declares for it, if any."""
        return Registry(
            tables=tuple(
                attrs.evolve(known, references=t.references) if (known := facts.table(t.name)) else t
                for t in self.tables
            ),
            constraint_fields={**self.constraint_fields, **facts.constraint_fields},
        )


_registered: dict[str, tuple[Registry, bool]] = {}


def register(name: str, registry: Registry, *, builtin: bool = False) -> None:
    """Make ``registry``'s facts known to this process under ``name`` (registering again replaces them).

    Error translation then names the field of each of its constraints, and backup/restore, roles
    and stats use its table facts for the tables the database holds. ``builtin``: the facts of
    datalayer's own schema, used only for projects with ``builtin = true``; they win over any other
    registry's facts for the tables and constraints they name (a service registering its whole
    catalog keeps ``users_email_key_key`` on the field ``users.email``). Two other registries naming
    one constraint differently are refused (ValidationError): one fact, one place.
    """
    if not isinstance(registry, Registry):
        raise ValidationError({"registry": f"must be a datalayer.registry.Registry, got {type(registry).__name__}"})
    if not builtin:
        ruled = {c for reg, b in _registered.values() if b for c in reg.constraint_fields}
        for other, (reg, other_builtin) in _registered.items():
            if other == name or other_builtin:
                continue
            for constraint, field in registry.constraint_fields.items():
                known = reg.constraint_fields.get(constraint)
                if known is not None and known != field and constraint not in ruled:
                    raise ValidationError(
                        {
                            "registry": f"constraint {constraint} is registered by {other!r} as "
                            f"{'.'.join(known)}, not {'.'.join(field)}; register only your own tables' facts"
                        }
                    )
    _registered[name] = (registry, builtin)
    register_constraint_fields(_merged(builtin=True).constraint_fields)


def _merged(*, builtin: bool) -> Registry:
    # The built-in facts first for tables (the first fact of a table wins) and last for constraints
    # (the last one wins), so that they win whatever the order of registration.
    regs = sorted(_registered.values(), key=lambda r: not r[1])
    tables: dict[str, Table] = {}
    fields: dict[str, tuple[str, str]] = {}
    for reg, is_builtin in regs:
        if is_builtin and not builtin:
            continue
        for t in reg.tables:
            tables.setdefault(t.name, t)
    for reg, is_builtin in reversed(regs):
        if is_builtin and not builtin:
            continue
        fields.update(reg.constraint_fields)
    return Registry(tables=tuple(tables.values()), constraint_fields=fields)


def registered(*, builtin: bool = True) -> Registry:
    """The facts of every registered registry (the built-in schema's too when ``builtin``), merged."""
    merged = _merged(builtin=builtin)
    # Facts only: order and references come from the catalog when overlaid.
    return Registry(
        tables=tuple(attrs.evolve(t, references=()) for t in merged.tables), constraint_fields=merged.constraint_fields
    )


def resolve_registry(
    db: psycopg.Connection[Any], registry: Registry | None = None, *, project: Project | None = None
) -> Registry:
    """``registry`` if given; else the database's tables (``registry_from_catalog``) with the registered facts.

    The built-in schema's facts apply when the project has ``builtin = true`` (the default).
    """
    if registry is not None:
        if not isinstance(registry, Registry):
            raise ValidationError({"registry": f"must be a datalayer.registry.Registry, got {type(registry).__name__}"})
        return registry
    if project is None:
        from datalayer.project import find_project

        project = find_project()
    # The built-in facts are registered by datalayer.builtin_schema, which the datalayer package imports.
    return registry_from_catalog(db).overlaid(registered(builtin=project.builtin))


_TABLES = """
SELECT c.relname::text,
       ARRAY(SELECT DISTINCT r.relname::text
             FROM pg_catalog.pg_constraint f JOIN pg_catalog.pg_class r ON r.oid = f.confrelid
             WHERE f.conrelid = c.oid AND f.contype = 'f' AND f.confrelid <> c.oid
               AND r.relnamespace = c.relnamespace AND NOT r.relispartition
             ORDER BY 1)
FROM pg_catalog.pg_class c
WHERE c.relnamespace = pg_catalog.current_schema()::regnamespace
  AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

# Unique, foreign-key and check constraints over a single column, and unique indexes on a single
# column that no constraint owns (CREATE UNIQUE INDEX): each names the column it guards.
_FIELDS = """
SELECT k.conname::text, c.relname::text, a.attname::text
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.conkey[1]
WHERE c.relname::text = ANY(%(tables)s) AND c.relnamespace = pg_catalog.current_schema()::regnamespace
  AND k.contype IN ('u', 'f', 'c') AND pg_catalog.cardinality(k.conkey) = 1
UNION
SELECT i.relname::text, c.relname::text, a.attname::text
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
JOIN pg_catalog.pg_class c ON c.oid = x.indrelid
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = x.indkey[0]
WHERE c.relname::text = ANY(%(tables)s) AND c.relnamespace = pg_catalog.current_schema()::regnamespace
  AND x.indisunique AND NOT x.indisprimary AND x.indnkeyatts = 1 AND x.indkey[0] <> 0
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid)
ORDER BY 1
"""


def registry_from_catalog(db: psycopg.Connection[Any]) -> Registry:
    """The tables of the current schema in foreign-key order (ties by name) and their constraints' fields.

    Partitions, and the migration runner's own tables, are left out. A constraint over several
    columns (or an expression) names no single field and is left out too.
    """
    rows = db.execute(_TABLES).fetchall()
    references = {
        str(name): tuple(str(r) for r in refs) for name, refs in rows if not str(name).startswith(_BOOKKEEPING_PREFIXES)
    }
    order = _foreign_key_order(references)
    fields = {
        str(con): (str(table), str(column))
        for con, table, column in db.execute(_FIELDS, {"tables": list(order)}).fetchall()
    }
    return Registry(tables=tuple(Table(t, references=references[t]) for t in order), constraint_fields=fields)


def _foreign_key_order(references: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    parents = {t: {r for r in refs if r in references and r != t} for t, refs in references.items()}
    children: dict[str, set[str]] = {t: set() for t in parents}
    for t, ps in parents.items():
        for p in ps:
            children[p].add(t)
    ready = [t for t, ps in parents.items() if not ps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        t = heapq.heappop(ready)
        order.append(t)
        for c in children[t]:
            parents[c].discard(t)
            if not parents[c]:
                heapq.heappush(ready, c)
    # A cycle of foreign keys has no parents-first order: its tables follow, by name.
    order += sorted(t for t in parents if t not in order)
    return tuple(order)
