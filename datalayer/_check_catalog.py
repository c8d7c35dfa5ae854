"""What ``datalayer check`` asks the catalog: column nullability, column order, views, types."""

from __future__ import annotations

from typing import Any

import attrs
import psycopg

__all__ = ["Catalog", "Column", "TypeInfo"]


@attrs.frozen
class Column:
    """A relation's column: its name and why it may be NULL (None: it cannot)."""

    name: str
    why_null: str | None


@attrs.frozen
class TypeInfo:
    """A result type as check compares it: domains resolved to their base type."""

    name: str  # the base type's name ("int4", "text", "mood" for an enum)
    kind: str  # pg_type.typtype of the base type: b(ase), e(num), r(ange), m(ultirange), c(omposite), p
    element: TypeInfo | None  # for arrays
    shown: str  # as findings show it: "text[]", "mood (enum)", "email (domain over text)"
    labels: tuple[str, ...] = ()  # an enum's labels


# A NOT NULL constraint added NOT VALID (PostgreSQL 18) sets attnotnull although old rows may be NULL.
_COLUMNS = """
SELECT a.attname,
       a.attnotnull AND NOT EXISTS (
           SELECT FROM pg_constraint c
           WHERE c.conrelid = a.attrelid AND c.contype = 'n' AND NOT c.convalidated AND a.attnum = ANY(c.conkey)),
       a.attnotnull,
       coalesce(dn.nn, false)
FROM pg_attribute a
LEFT JOIN LATERAL (
    WITH RECURSIVE d(oid, nn, depth) AS (
        SELECT t.oid, t.typnotnull, 0 FROM pg_type t WHERE t.oid = a.atttypid AND t.typtype = 'd'
        UNION ALL
        SELECT t.oid, t.typnotnull, d.depth + 1 FROM d JOIN pg_type p ON p.oid = d.oid
        JOIN pg_type t ON t.oid = p.typbasetype AND t.typtype = 'd' WHERE d.depth < 20)
    SELECT bool_or(d.nn) AS nn FROM d) dn ON true
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


class Catalog:
    """Cached catalog look-ups on one connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._relations: dict[str, tuple[str, int] | None] = {}
        self._columns: dict[int, list[Column]] = {}
        self._types: dict[int, TypeInfo] = {}
        self._domains: dict[str, bool] = {}
        self._named: dict[str, TypeInfo | None] = {}
        self._column_types: dict[int, list[int]] = {}

    def relation(self, name: str) -> tuple[str, int] | None:
        """(relkind, oid) of a table, view … as the query would resolve ``name``; None if unknown."""
        if name not in self._relations:
            row = self.conn.execute(
                "SELECT c.relkind::text, c.oid::int8 FROM pg_class c WHERE c.oid = to_regclass(%s)", (name,)
            ).fetchone()
            self._relations[name] = None if row is None else (str(row[0]), int(row[1]))
        return self._relations[name]

    def view_definition(self, oid: int) -> str:
        row = self.conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone()
        return str(row[0]) if row and row[0] else ""

    def columns(self, oid: int) -> list[Column]:
        """The columns of a table (attnum order), with why each may be NULL."""
        if oid not in self._columns:
            cols = []
            for name, valid_notnull, notnull, domain_notnull in self.conn.execute(_COLUMNS, (oid,)).fetchall():
                why: str | None = None
                if notnull and not valid_notnull:
                    why = f"column {name} has a NOT NULL constraint added NOT VALID: existing rows may hold NULL"
                elif not valid_notnull and not domain_notnull:
                    why = f"column {name} is nullable in the table"
                cols.append(Column(name=str(name), why_null=why))
            self._columns[oid] = cols
        return self._columns[oid]

    def domain_not_null(self, type_name: str) -> bool:
        """Is ``type_name`` a domain declared NOT NULL (a cast to it never yields NULL)?"""
        if type_name not in self._domains:
            row = self.conn.execute(
                "SELECT t.typtype = 'd' AND t.typnotnull FROM pg_type t WHERE t.oid = to_regtype(%s)", (type_name,)
            ).fetchone()
            self._domains[type_name] = bool(row and row[0])
        return self._domains[type_name]

    def column_types(self, oid: int) -> list[int]:
        """The type oids of a relation's columns (attnum order, as :meth:`columns`)."""
        if oid not in self._column_types:
            rows = self.conn.execute(
                "SELECT atttypid::int8 FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
                "ORDER BY attnum",
                (oid,),
            ).fetchall()
            self._column_types[oid] = [int(r[0]) for r in rows]
        return self._column_types[oid]

    def type_named(self, name: str) -> TypeInfo | None:
        """The type a cast to ``name`` yields (None: no such type)."""
        if name not in self._named:
            row = self.conn.execute("SELECT to_regtype(%s)::oid::int8", (name,)).fetchone()
            self._named[name] = None if row is None or row[0] is None else self.type_info(int(row[0]))
        return self._named[name]

    def type_info(self, oid: int) -> TypeInfo:
        if oid not in self._types:
            self._types[oid] = self._resolve(oid, 0)
        return self._types[oid]

    def _resolve(self, oid: int, depth: int) -> TypeInfo:
        row = self.conn.execute(
            "SELECT typname::text, typtype::text, typcategory::text, typelem::int8, typbasetype::int8 "
            "FROM pg_type WHERE oid = %s",
            (oid,),
        ).fetchone()
        if row is None or depth > 20:
            return TypeInfo(name=f"oid {oid}", kind="?", element=None, shown=f"oid {oid}")
        name, kind, category, elem, base = row
        if kind == "d":
            inner = self._resolve(int(base), depth + 1)
            return attrs.evolve(inner, shown=f"{name} (domain over {inner.shown})")
        if category == "A" and elem:
            element = self._resolve(int(elem), depth + 1)
            return TypeInfo(name=str(name), kind=str(kind), element=element, shown=f"{element.shown}[]")
        labels: tuple[str, ...] = ()
        if kind == "e":
            found = self.conn.execute(
                "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = %s ORDER BY enumsortorder", (oid,)
            ).fetchall()
            labels = tuple(str(r[0]) for r in found)
        label = {"e": " (enum)", "r": " (range)", "m": " (multirange)", "c": " (composite)"}.get(str(kind), "")
        return TypeInfo(name=str(name), kind=str(kind), element=None, shown=f"{name}{label}", labels=labels)
