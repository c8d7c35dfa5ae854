"""Parse ``sql/<domain>.sql`` into named queries.

A file holds blocks like::

    -- name: get_by_id :maybe
    -- One user by primary key.
    SELECT … FROM users WHERE id = :user_id;

Parameters are written the way psql substitutes variables, so the text runs in psql after
``\\set user_id 42``: ``:name`` (as written) or ``:'name'`` (as a quoted literal). Both become the
bind parameter ``%(name)s``. ``::casts``, string literals, quoted identifiers, comments and
dollar-quoted bodies are left alone, and a literal ``%`` is doubled for psycopg.

The loader refuses, with the file and line, what PostgreSQL cannot bind: parameters in DDL, SET or
COPY, a type name before a parameter (``interval :'w'`` must be ``:'w'::interval``), psql's
identifier form ``:"name"``, and more than one statement per name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from datalayer._paths import sql_dir
from datalayer.errors import QueryError

__all__ = ["CARDINALITIES", "QUERY_NAME", "Query", "QueryFile", "load_file", "load_queries", "parse_sql"]

CARDINALITIES = ("one", "maybe", "many", "scalar", "exec", "copy")

# What a query name may be: the header spells it, bind checks it.
QUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER = re.compile(r"^--\s*name:\s*(?P<name>" + QUERY_NAME.pattern + r")\s*(?::(?P<card>[a-z]+))?\s*$")
_ANNOTATION = re.compile(r"^--\s*(?P<key>[a-z][a-z-]*):\s*(?P<value>.*)$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*$")
# Type names that PostgreSQL reads as a typed literal when a string follows: `interval '1 day'`.
# With a bind parameter there, the server sees `interval $1`, which is a syntax error.
_TYPED_LITERAL_WORDS = frozenset(
    {
        "interval",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "timetz",
        "json",
        "jsonb",
        "uuid",
        "inet",
        "numeric",
        "bigint",
        "integer",
        "int",
        "text",
        "boolean",
        "bytea",
    }
)
_NO_PARAMS_STATEMENTS = frozenset(
    {
        "create",
        "alter",
        "drop",
        "set",
        "reset",
        "copy",
        "truncate",
        "grant",
        "revoke",
        "vacuum",
        "cluster",
        "reindex",
        "comment",
        "listen",
        "notify",
        "do",
        "lock",
        "security",
        "refresh",
    }
)


@attrs.frozen
class Query:
    """One named statement from a SQL file."""

    name: str
    domain: str
    cardinality: str
    text: str  # as written in the file, runnable in psql
    sql: str  # as sent through psycopg: %(name)s placeholders
    params: tuple[str, ...]  # in order of first appearance
    file: str  # "sql/users.sql"
    line: int  # line of the "-- name:" header
    sql_line: int  # line of the first line of SQL
    doc: str
    annotations: Mapping[str, str]
    statement: str  # first keyword, lower-case: select, insert, with, copy …

    @property
    def qualname(self) -> str:
        return f"{self.domain}.{self.name}"

    @property
    def location(self) -> str:
        """``sql/users.sql:12 users.get_by_id``"""
        return f"{self.file}:{self.line} {self.qualname}"

    def location_at(self, position: int | None) -> str:
        """The location of a 1-based character position in the statement sent to the server."""
        if not position:
            return self.location
        server_sql = _to_dollar(self.sql)
        line = self.sql_line + server_sql.count("\n", 0, max(position - 1, 0))
        return f"{self.file}:{line} {self.qualname}"

    @property
    def read_only(self) -> bool:
        return self.statement in ("select", "values", "table", "show", "explain") or (
            self.statement == "with" and not re.search(r"\b(insert|update|delete|merge)\b", code_only(self.text), re.I)
        )


@attrs.frozen
class QueryFile:
    """The named queries of one file or folder (``datalayer.sql.load`` gives one that can bind)."""

    domain: str
    path: Path
    queries: Mapping[str, Query]
    location: str = ""  # how errors name the file or folder: "sql/users.sql"; "" means sql/<domain>.sql

    @property
    def where(self) -> str:
        return self.location or f"sql/{self.domain}.sql"


def _to_dollar(sql: str) -> str:
    order: dict[str, int] = {}

    def sub(m: re.Match[str]) -> str:
        return f"${order.setdefault(m.group(1), len(order) + 1)}"

    return re.sub(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s", sub, sql.replace("%%", "%"))


class _Refused(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def _convert(text: str) -> tuple[str, tuple[str, ...], bool]:
    """psql-style text → (psycopg text, parameter names, has a second statement)."""
    out: list[str] = []
    params: dict[str, None] = {}
    forms: dict[str, bool] = {}  # name -> written quoted (:'name')
    i, n = 0, len(text)
    ended = False  # saw the terminating ';'
    while i < n:
        c = text[i]
        if ended and not c.isspace():
            if text.startswith("--", i):
                j = text.find("\n", i)
                j = n if j < 0 else j
                out.append(text[i:j])
                i = j
                continue
            raise _Refused(i, "more than one statement under one name; give each statement its own -- name:")
        if (j := _skipped(text, i)) > i:  # literals, quoted names, comments: copied as they are
            out.append(text[i:j].replace("%", "%%"))
            i = j
        elif text.startswith("::", i):
            out.append("::")
            i += 2
        elif c == ":":
            name, j = _param_at(text, i)
            if name is None:
                out.append(c)
                i += 1
                continue
            before = _WORD_BEFORE.search(text, 0, i)
            if before and before.group(1).lower() in _TYPED_LITERAL_WORDS:
                word = before.group(1)
                raise _Refused(
                    i,
                    f"a bind parameter cannot follow the type name {word!r}: write "
                    f"{text[i:j]}::{word.lower()} instead of {word} {text[i:j]}",
                )
            quoted = text.startswith(":'", i)
            if forms.setdefault(name, quoted) != quoted:
                raise _Refused(
                    i,
                    f"parameter {name} is written both as :{name} and :'{name}'; psql substitutes one value, "
                    "so use one form",
                )
            params.setdefault(name)
            out.append(f"%({name})s")
            i = j
        elif c == "%":
            out.append("%%")
            i += 1
        elif c == ";":
            ended = True
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out).rstrip(), tuple(params), ended


def code_only(text: str) -> str:
    """``text`` with its string literals, quoted identifiers, dollar-quoted bodies and comments blanked
    out: what is left is SQL keywords, names and operators (for classifying a statement)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = _skipped(text, i)
        out.append(" " if j > i else text[i])
        i = max(j, i + 1)
    return "".join(out)


def _skipped(text: str, i: int) -> int:
    """The end of the string literal, quoted identifier, comment or dollar-quoted body starting at
    ``i``; ``i`` when none starts there. One rule for the loader and for classifying statements."""
    c, n = text[i], len(text)
    if c == "'" or (c in "eE" and text.startswith("'", i + 1) and not _word_char_before(text, i)):
        return _end_of_string(text, i)
    if c == '"':
        j = text.find('"', i + 1)
        while j >= 0 and text.startswith('""', j):
            j = text.find('"', j + 2)
        return n if j < 0 else j + 1
    if text.startswith("--", i):
        j = text.find("\n", i)
        return n if j < 0 else j
    if text.startswith("/*", i):
        return _end_of_block_comment(text, i)
    if c == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])) and not _word_char_before(text, i):
        tag = m.group(0)
        j = text.find(tag, i + len(tag))
        return n if j < 0 else j + len(tag)
    return i


def _word_char_before(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def _param_at(text: str, i: int) -> tuple[str | None, int]:
    nxt = text[i + 1 : i + 2]
    if nxt == "'":
        m = _IDENT.match(text, i + 2)
        if m and text.startswith("'", m.end()):
            return m.group(0), m.end() + 1
        raise _Refused(i, "malformed :'name' parameter; write :'name' with a plain identifier inside")
    if nxt == '"':
        raise _Refused(
            i,
            'psql\'s :"name" substitutes an identifier, which cannot be a bind parameter; '
            "pick the identifier from a fixed set of queries instead",
        )
    m = _IDENT.match(text, i + 1)
    if m and not _word_char_before(text, i):
        return m.group(0), m.end()
    return None, i + 1


def _end_of_string(text: str, i: int) -> int:
    escape = text[i] in "eE"
    j = i + (2 if escape else 1)
    n = len(text)
    while j < n:
        if escape and text[j] == "\\":
            j += 2
            continue
        if text[j] == "'":
            if text.startswith("''", j):
                j += 2
                continue
            return j + 1
        j += 1
    raise _Refused(i, "unterminated string literal")


def _end_of_block_comment(text: str, i: int) -> int:
    depth, j, n = 0, i, len(text)
    while j < n:
        if text.startswith("/*", j):
            depth += 1
            j += 2
        elif text.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    raise _Refused(i, "unterminated /* comment")


def _first_keyword(sql: str) -> str:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", " ", sql, flags=re.S).strip()
    m = re.match(r"\(*\s*([A-Za-z]+)", stripped)
    return m.group(1).lower() if m else ""


def _blocks(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    start: int | None = None
    for idx, line in enumerate(lines):
        if _HEADER.match(line.strip()):
            if start is not None:
                yield start, lines[start:idx]
            start = idx
        elif start is None and line.strip() and not line.strip().startswith("--"):
            raise QueryError(f"sql text before the first '-- name:' header at line {idx + 1}")
    if start is not None:
        yield start, lines[start:]


def parse_sql(source: str, *, domain: str, file: str) -> dict[str, Query]:
    """Parse the text of one SQL file; ``file`` is how errors name it (``sql/users.sql``)."""
    lines = source.removeprefix("\ufeff").splitlines()  # a byte order mark some editors write
    queries: dict[str, Query] = {}
    try:
        blocks = list(_blocks(lines))
    except QueryError as e:
        raise QueryError(f"{file}: {e}", location=file) from None
    for start, block in blocks:
        header = _HEADER.match(block[0].strip())
        assert header is not None
        name, card = header.group("name"), header.group("card")
        where = f"{file}:{start + 1} {domain}.{name}"
        if card not in CARDINALITIES:
            raise QueryError(
                f"{where}: cardinality must be one of :{', :'.join(CARDINALITIES)}, got {card!r}",
                location=where,
            )
        if name in queries:
            raise QueryError(f"{where}: duplicate query name (first at line {queries[name].line})", location=where)
        doc: list[str] = []
        annotations: dict[str, str] = {}
        body_start = len(block)
        for k, line in enumerate(block[1:], start=1):
            s = line.strip()
            if s.startswith("--"):
                a = _ANNOTATION.match(s)
                if a:
                    annotations[a.group("key")] = a.group("value").strip()
                else:
                    doc.append(s[2:].strip())
            elif s:
                body_start = k
                break
        body = "\n".join(block[body_start:]).rstrip()
        if not body:
            raise QueryError(f"{where}: no SQL after the header", location=where)
        sql_line = start + body_start + 1
        try:
            converted, params, _ = _convert(body)
        except _Refused as e:
            err_line = sql_line + body.count("\n", 0, e.offset)
            loc = f"{file}:{err_line} {domain}.{name}"
            raise QueryError(f"{loc}: {e}", location=loc) from None
        statement = _first_keyword(body)
        if params and statement in _NO_PARAMS_STATEMENTS:
            raise QueryError(
                f"{where}: PostgreSQL cannot bind parameters in a {statement.upper()} statement "
                f"({', '.join(params)}); DDL, SET and COPY take literal text only",
                location=where,
            )
        if (card == "copy") != (statement == "copy"):
            raise QueryError(f"{where}: use :copy for COPY … FROM STDIN statements and only for them", location=where)
        text = body.rstrip().rstrip(";").rstrip() if body.rstrip().endswith(";") else body
        queries[name] = Query(
            name=name,
            domain=domain,
            cardinality=card,
            text=text,
            sql=converted,
            params=params,
            file=file,
            line=start + 1,
            sql_line=sql_line,
            doc=" ".join(doc).strip(),
            annotations=annotations,
            statement=statement,
        )
    return queries


def load_file(path: Path, file: str | None = None) -> QueryFile:
    """Load one SQL file; errors name it as ``file`` (default ``sql/<name>.sql``)."""
    domain = path.stem
    file = file or f"sql/{path.name}"
    try:
        source = path.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise QueryError(
            f"{file}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8", location=file
        ) from None
    except OSError as e:
        raise QueryError(f"{file}: cannot be read ({e.strerror})", location=file) from None
    return QueryFile(domain=domain, path=path, queries=parse_sql(source, domain=domain, file=file), location=file)


def load_queries(domain: str) -> QueryFile:
    """Load the built-in ``sql/<domain>.sql`` (wheel or source checkout); ``datalayer.sql.load`` is public."""
    path = sql_dir() / f"{domain}.sql"
    if not path.is_file():
        raise QueryError(f"sql/{domain}.sql does not exist; add it next to the other query files")
    return load_file(path)
