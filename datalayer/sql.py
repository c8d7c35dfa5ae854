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

import os
import sys
from pathlib import Path
from typing import Any, TypeVar, overload

import attrs

from datalayer._paths import sql_dir
from datalayer._run import Binding, BoundQuery, bind_query, bindings, strict_records
from datalayer._sql import CARDINALITIES, Query, load_file, parse_sql
from datalayer._sql import QueryFile as _QueryFile
from datalayer.errors import QueryError

__all__ = ["CARDINALITIES", "Binding", "BoundQuery", "Query", "QueryFile", "bindings", "load", "strict_records"]

T = TypeVar("T")


@attrs.frozen
class QueryFile(_QueryFile):
    """The named queries of one ``.sql`` file or a folder of them; ``bind`` makes one callable."""

    @overload
    def bind(self, name: str, result: None = None) -> BoundQuery[None]: ...

    @overload
    def bind(self, name: str, result: type[T]) -> BoundQuery[T]: ...

    def bind(self, name: str, result: type[Any] | None = None) -> BoundQuery[Any]:
        """The query ``name`` bound to ``result``: an attrs class builds a record per row, any other type
        takes the first column; None (for :exec and :copy) leaves rows as tuples.

        Bind once, at import. A name the file does not define does not break the import: ``datalayer
        check`` reports it with the file, and calling it raises QueryError naming it.
        """
        if not isinstance(name, str):
            raise QueryError(f"{self.where}: bind takes the query's name as a str, got {type(name).__name__}")
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
        for name, query in parse_sql(source, domain=path.stem, file=file).items():
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
