"""Your own named queries: load ``.sql`` files, bind each query to the type it returns, call it.

::

    from datalayer import sql

    notes = sql.load(Path(__file__).parent / "sql" / "notes.sql")   # a file, or a folder of them
    get_note = notes.bind("get", Note)           # any attrs class is a record; int, str … a single value
    note = get_note.maybe(db, note_id=7)         # Note | None

A file holds blocks headed ``-- name: get :maybe`` (the cardinality: one, maybe, many, scalar, exec,
copy); parameters are written as psql substitutes them, ``:note_id`` or ``:'title'``. Errors name the
query as ``sql/notes.sql:12 notes.get``: the file relative to the project root (the nearest folder above
it holding a ``pyproject.toml``).
"""

from __future__ import annotations

import enum
import os
import sys
import types
import typing
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar, overload
from uuid import UUID

import attrs

from datalayer._paths import sql_dir
from datalayer._run import Binding, BoundQuery, bind_query, bindings, strict_records
from datalayer._sql import CARDINALITIES, QUERY_NAME, Query, load_file, parse_sql
from datalayer._sql import QueryFile as _QueryFile
from datalayer.errors import QueryError

__all__ = ["CARDINALITIES", "Binding", "BoundQuery", "Query", "QueryFile", "bindings", "load", "strict_records"]

T = TypeVar("T")

SCALARS: tuple[type, ...] = (int, float, Decimal, str, bytes, bool, datetime, date, time, timedelta, UUID, dict, list)
"""The single-value types ``bind`` takes (besides attrs records and Enum subclasses): what psycopg reads
from a column (``dict`` / ``list`` for json and arrays)."""


def _result_problem(result: object) -> str | None:
    """Why ``result`` cannot be a binding's result type, or None."""
    if result is None or (isinstance(result, type) and (attrs.has(result) or issubclass(result, enum.Enum))):
        return None
    if result in SCALARS or typing.get_origin(result) in (dict, list):
        return None
    if typing.get_origin(result) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(result) if m is not type(None)]
        if len(members) == 1 and len(typing.get_args(result)) == 2:
            return _result_problem(members[0])
        return f"{result!r} is a union; bind one type (with nullable=True for NULL)"
    if isinstance(result, type):
        if issubclass(result, tuple) and hasattr(result, "_fields"):
            return f"{result.__qualname__} is a NamedTuple; make it an attrs class (@attrs.frozen)"
        if hasattr(result, "__dataclass_fields__"):
            return f"{result.__qualname__} is a dataclass; make it an attrs class (@attrs.frozen)"
        return f"{result.__qualname__} is neither an attrs class nor a column type"
    return f"it takes a type, got a {type(result).__name__}"


@attrs.frozen
class QueryFile(_QueryFile):
    """The named queries of one ``.sql`` file or a folder of them; ``bind`` makes one callable."""

    @overload
    def bind(self, name: str, result: None = None) -> BoundQuery[None]: ...

    @overload
    def bind(self, name: str, result: type[T], *, nullable: Literal[False] = False) -> BoundQuery[T]: ...

    @overload
    def bind(self, name: str, result: type[T], *, nullable: Literal[True]) -> BoundQuery[T | None]: ...

    def bind(self, name: str, result: type[Any] | None = None, *, nullable: bool = False) -> BoundQuery[Any]:
        """The query ``name`` bound to ``result``: an attrs class builds a record per row; a column type
        (``SCALARS`` or an Enum subclass) takes the first column; None (for :exec and :copy) leaves
        rows as tuples. ``nullable=True`` types a single value that may be NULL as ``T | None``
        (``bind("q", int, nullable=True)``; ``int | None`` works at run time but mypy refuses it).

        Bind once, at import. A name the file does not define does not break the import: ``datalayer
        check`` reports it with the file, and calling it raises QueryError naming it. Anything else as
        ``result`` (a dataclass, a NamedTuple, an instance) is a QueryError.
        """
        if not isinstance(name, str):
            raise QueryError(f"{self.where}: bind takes the query's name as a str, got {type(name).__name__}")
        if not QUERY_NAME.fullmatch(name):
            # No '-- name:' header can spell it, so no file will ever hold it: refuse now, not at call time.
            shown = name if len(name) <= 60 else name[:60] + "…"
            raise QueryError(f"{self.where}: {shown!r} cannot be a query name; names are letters, digits and _")
        if (problem := _result_problem(result)) is not None:
            where = q.location if (q := self.queries.get(name)) is not None else f"{self.where} {name}"
            raise QueryError(
                f"{where}: cannot bind to {problem}; bind an attrs class (one record per row), a column type "
                f"({', '.join(t.__name__ for t in SCALARS)}, an Enum), or nothing for :exec and :copy",
                location=where,
            )
        if nullable:
            if result is None or attrs.has(result):
                raise QueryError(f"{self.where} {name}: nullable=True is for a single value, not a record")
            result = result | None  # type: ignore[assignment]
        module = str(sys._getframe(1).f_globals.get("__name__", "?"))
        return bind_query(self, name, result, module=module)

    def __contains__(self, name: object) -> bool:
        return name in self.queries


def load(path: str | os.PathLike[str]) -> QueryFile:
    """Load a ``.sql`` file, or every ``*.sql`` file of a folder (in name order).

    A relative ``path`` is read from the working directory: build it from ``__file__`` instead
    (``Path(__file__).parent / "sql"``). A missing path, a folder without ``.sql`` files, a query name
    defined twice (in one file or two files of the folder) and SQL the loader refuses are QueryErrors
    naming the file and line.
    """
    if not isinstance(path, str | os.PathLike):
        raise QueryError(f"sql.load takes a path (str or pathlib.Path), got {type(path).__name__}")
    if "\x00" in os.fspath(path):
        raise QueryError("sql.load: the path holds a NUL character, which no file name can")
    given = Path(path)
    where = _relative(given.resolve())
    if not given.exists():
        raise QueryError(
            f"{where}: no such file or folder (looked in {given.resolve()}); pass a .sql file or a folder of "
            "them, built from __file__ rather than the working directory",
            location=where,
        )
    given = given.resolve()
    if given.is_dir():
        return _load_folder(given, where)
    if given.suffix != ".sql":
        raise QueryError(f"{where}: not a .sql file; pass a .sql file or a folder of them", location=where)
    qf = load_file(given, where)
    if not qf.queries:
        raise QueryError(f"{where}: holds no '-- name:' query; add one or remove the file", location=where)
    return QueryFile(domain=qf.domain, path=given, queries=qf.queries, location=where)


def _load_folder(folder: Path, where: str) -> QueryFile:
    files = sorted(p for p in folder.glob("*.sql") if p.is_file())
    if not files:
        raise QueryError(f"{where}: the folder holds no .sql file; add one or pass another folder", location=where)
    queries: dict[str, Query] = {}
    for path in files:
        file = _relative(path)
        try:
            source = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise QueryError(f"{file}: cannot be read as UTF-8 text ({e})", location=file) from None
        parsed = parse_sql(source, domain=path.stem, file=file)
        if not parsed:
            raise QueryError(f"{file}: holds no '-- name:' query; add one or remove the file", location=file)
        for name, query in parsed.items():
            if (first := queries.get(name)) is not None:
                raise QueryError(
                    f"{query.location}: the query name {name!r} is also defined at {first.location}; "
                    f"names are unique across the files of {where}: rename one",
                    location=query.location,
                )
            queries[name] = query
    return QueryFile(domain=folder.name, path=folder, queries=queries, location=where)


def _relative(path: Path) -> str:
    """How errors name ``path``: relative to its project's root, ``sql/…`` for datalayer's own queries."""
    try:
        builtin = sql_dir().resolve()
    except FileNotFoundError:
        builtin = None
    if builtin is not None and (path == builtin or builtin in path.parents):
        return Path("sql", path.relative_to(builtin)).as_posix()
    for parent in path.parents:
        if (parent / "pyproject.toml").is_file():
            return path.relative_to(parent).as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
