"""The project: where a service keeps its SQL, its migrations and the modules that bind its queries.

A service says so in its ``pyproject.toml``; every command and the pytest plugin read it from here
(this module and ``config`` are the only readers of the environment and of ``pyproject.toml``)::

    [tool.datalayer]
    sql = ["sql"]                  # folders of named queries
    migrations = ["migrations"]    # yoyo folders, applied after the built-in schema's (when it is on)
    modules = ["notes.repo"]       # where queries are bound, for check
    builtin = false                # true (the default) also installs datalayer's own schema
    test_database_prefix = "notes_test"

Folders are relative to the project root (the folder holding ``pyproject.toml``), must exist, must stay
inside the root (``..`` and absolute paths are refused: a migration source is named by its path from the
root, and that name is recorded in each database's ledger). A folder may be a symbolic link to a shared
folder elsewhere (its name is still the path as written); the guards against listing one folder twice,
sharing a folder between ``sql`` and ``migrations``, or listing a built-in folder compare the folders
the links lead to. Without a ``[tool.datalayer]`` table the project is the built-in schema only.

>>> p = Project(root=Path("/srv/notes"), migrations=(Path("/srv/notes/db/migrations"),), builtin=False)
>>> [s.name for s in p.migration_sources()]
['db/migrations']
"""

from __future__ import annotations

import keyword
import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import attrs

from datalayer._validators import check_text
from datalayer.errors import ConfigError

__all__ = [
    "BUILTIN_MODULES",
    "MigrationSource",
    "Project",
    "builtin_migrations_dir",
    "builtin_sql_dir",
    "find_project",
    "load_project",
    "project_importable",
]

_PACKAGE = Path(__file__).resolve().parent

# datalayer's own modules that bind queries of the built-in sql/ (tests/test_project.py compares this
# list with the bindings a full import of datalayer makes, so a new one cannot be forgotten).
BUILTIN_MODULES: tuple[str, ...] = (
    "datalayer.repos.users",
    "datalayer.repos.analyses",
    "datalayer.repos.files",
    "datalayer.repos.tool_generations",
    "datalayer.repos.system_log",
    "datalayer.repos.cache_entries",
    "datalayer.maintenance",
    "datalayer.health",
    "datalayer.partitions",
    "datalayer.builtin_schema",
)

_KEYS = ("sql", "migrations", "modules", "builtin", "test_database_prefix")
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,39}")
DEFAULT_TEST_DATABASE_PREFIX = "datalayer_test"
# A pyproject.toml is a few kilobytes; a bound keeps a huge or endless file from filling the memory.
MAX_PYPROJECT_BYTES = 4 * 1024 * 1024


def _find(name: str) -> Path:
    # A wheel carries sql/ and migrations/ as package data (_data/); an editable install and a source
    # checkout find them at the top of the checkout, next to the package.
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise ConfigError(
        f"datalayer cannot find its built-in {name}/ folder (looked in {packaged} and {checkout}); "
        "reinstall datalayer (pip install --force-reinstall sqlfirst-datalayer)"
    )


def builtin_sql_dir() -> Path:
    """The built-in schema's folder of named queries (inside the wheel, or at the top of a checkout)."""
    return _find("sql")


def builtin_migrations_dir() -> Path:
    """The built-in schema's yoyo migrations folder (inside the wheel, or at the top of a checkout)."""
    return _find("migrations")


@attrs.frozen
class MigrationSource:
    """One folder of yoyo migrations and the name the ledger records for it."""

    name: str  # "datalayer" for the built-in schema; else the folder relative to the project root
    path: Path  # absolute
    builtin: bool


def _absolute(value: str | os.PathLike[str]) -> Path:
    return Path(value).absolute()


def _paths(value: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(p).absolute() for p in value)


def _names(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class Project:
    """A service's parts: its SQL folders, migration folders, binding modules, and the built-in schema or not."""

    root: Path = attrs.field(converter=_absolute)
    sql: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    migrations: tuple[Path, ...] = attrs.field(default=(), converter=_paths)
    modules: tuple[str, ...] = attrs.field(default=(), converter=_names)
    builtin: bool = True
    test_database_prefix: str = DEFAULT_TEST_DATABASE_PREFIX
    declared: bool = False  # True when pyproject.toml has a [tool.datalayer] table
    # The pyproject.toml read; None when none was found from root up (or the Project was built in code).
    pyproject: Path | None = attrs.field(default=None, converter=attrs.converters.optional(_absolute))

    def origin(self) -> str:
        """Where these settings come from, for messages: the file, or that there is none."""
        if self.pyproject is None:
            if self.declared or not self.builtin or self.sql or self.migrations or self.modules:
                return f"a Project built in code, root {self.root}"
            return f"no pyproject.toml found from {self.root} up: the built-in schema only"
        if not self.declared:
            return f"{self.pyproject}, which has no [tool.datalayer]: the built-in schema only"
        return str(self.pyproject)

    def migration_sources(self) -> tuple[MigrationSource, ...]:
        """Every migration folder in the order applied: the built-in schema's first (when ``builtin``)."""
        ours = tuple(MigrationSource(_name(self.root, p), p, builtin=False) for p in self.migrations)
        if not self.builtin:
            return ours
        return (MigrationSource("datalayer", builtin_migrations_dir(), builtin=True), *ours)

    def check_modules(self) -> tuple[str, ...]:
        """The modules ``check`` imports: datalayer's own (when ``builtin``), then the project's."""
        return (*(BUILTIN_MODULES if self.builtin else ()), *self.modules)

    def sql_folders(self) -> tuple[Path, ...]:
        """Every folder of named queries: the built-in one (when ``builtin``), then the project's."""
        return (*((builtin_sql_dir(),) if self.builtin else ()), *self.sql)


def _name(root: Path, path: Path) -> str:
    try:
        return PurePosixPath(path.relative_to(root).as_posix()).as_posix()
    except ValueError:  # a Project built directly with a folder elsewhere: its absolute path names it
        return path.as_posix()


def _problem(path: Path, *, folder: bool) -> str:
    """Why ``path`` is not a folder (``folder``) or a regular file; "" when it is one."""
    try:
        mode = path.stat().st_mode
    except ValueError:  # os.stat refuses a NUL character: no such path can exist
        return "is not a valid path (it holds a NUL character)"
    except (FileNotFoundError, NotADirectoryError):
        return "is a symbolic link that leads nowhere" if path.is_symlink() else "does not exist"
    except OSError as e:  # permission denied, a loop of symbolic links, ...
        return f"cannot be examined ({e.strerror or type(e).__name__})"
    if folder:
        return "" if stat.S_ISDIR(mode) else "is not a folder"
    if stat.S_ISREG(mode):
        return ""
    return "is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file (a pipe or a device?)"


def _from_cwd(path: Path, variable: str) -> Path:
    if path.is_absolute():
        return path
    try:
        return Path.cwd() / path
    except OSError as e:  # the working directory was removed (or made unreadable) under the process
        raise ConfigError(
            f"the working directory cannot be read ({e.strerror or type(e).__name__}), so the project cannot "
            f"be found from it; cd to an existing folder, or name the project folder by an absolute path",
            variable=variable,
        ) from None


def find_project(start: Path | None = None, *, environ: Mapping[str, str] | None = None) -> Project:
    """The project of ``start`` (default: the working directory): the nearest ``pyproject.toml`` up the tree.

    ``DATALAYER_PROJECT`` in ``environ`` (default ``os.environ``), a folder holding ``pyproject.toml``,
    wins over the walk (cron jobs and containers run elsewhere); set but empty, it counts as unset. No
    ``pyproject.toml`` up the tree, or one without a ``[tool.datalayer]`` table, means the built-in schema
    only (root: the nearest folder with a ``pyproject.toml``, else ``start``). A bad table, or a
    ``pyproject.toml`` that cannot be read (not a regular file, not UTF-8, not TOML), raises ConfigError
    naming the file.
    """
    env = os.environ if environ is None else environ
    chosen = check_text("DATALAYER_PROJECT", env.get("DATALAYER_PROJECT", ""))
    if chosen:
        return load_project(chosen, _variable="DATALAYER_PROJECT")
    here = _from_cwd(Path("." if start is None else start), "DATALAYER_PROJECT")
    for folder in (here, *here.parents):
        try:
            (folder / "pyproject.toml").lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError):
            pass  # what stops the look is reported by _load
        # Any entry named pyproject.toml ends the walk: passing a broken one by would silently pick the
        # settings of an enclosing project.
        return _load(folder, None)
    return Project(root=here)


def load_project(folder: str | os.PathLike[str], *, _variable: str = "--project") -> Project:
    """The project whose ``pyproject.toml`` is in ``folder`` (what ``datalayer --project DIR`` reads)."""
    if not os.fspath(folder):  # Path("") is the working directory: an empty value is a mistake, not "here"
        raise ConfigError(
            f"{_variable} needs a folder, got an empty value; give the folder of the service's pyproject.toml",
            variable=_variable,
        )
    return _load(_from_cwd(Path(folder), _variable), _variable)


def _load(root: Path, variable: str | None) -> Project:
    # variable: the setting that named root, None when root was found by walking up.
    pyproject = root / "pyproject.toml"
    problem = _problem(root, folder=True)
    if problem:
        problem = f"{root} {problem}"
    else:
        problem = _problem(pyproject, folder=False)
        problem = (
            f"{root} holds no pyproject.toml" if problem == "does not exist" else problem and f"{pyproject} {problem}"
        )
    if problem and variable is None:
        raise ConfigError(
            f"the nearest pyproject.toml up the tree is not a readable file: {problem}; fix or remove it, "
            "or give --project (or DATALAYER_PROJECT) the service's folder",
            variable="pyproject.toml",
        )
    if problem:
        raise ConfigError(
            f"{variable} must be a project folder holding a pyproject.toml, but {problem}; "
            "give the folder of the service's pyproject.toml",
            variable=variable,
        )
    data = _read(pyproject, variable or "pyproject.toml")
    tool = data.get("tool", {})
    table = tool.get("datalayer") if isinstance(tool, dict) else None
    if table is None:
        return Project(root=root, pyproject=pyproject)
    return _parse(root, pyproject, table)


def _read(pyproject: Path, variable: str) -> dict[str, object]:
    def fail(problem: str, remedy: str = "fix the file") -> ConfigError:
        return ConfigError(f"cannot read {pyproject} ({problem}); {remedy}", variable=variable)

    try:
        # O_NONBLOCK: a pipe put in the file's place after the check must not hang the open; fstat refuses it.
        fd = os.open(pyproject, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise fail("not a regular file")
            raw = f.read(MAX_PYPROJECT_BYTES + 1)
    except OSError as e:
        raise fail(f"{type(e).__name__}: {e.strerror or e}") from None
    if len(raw) > MAX_PYPROJECT_BYTES:
        raise fail(
            f"larger than {MAX_PYPROJECT_BYTES // (1024 * 1024)} MiB, far more than a pyproject.toml holds",
            "check that this is the service's pyproject.toml",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise fail(f"not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line}", "save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise fail(f"TOMLDecodeError: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise fail("arrays or tables nested too deeply to parse") from None


def _real(path: Path) -> Path:
    # os.path.realpath never raises (a loop is left unresolved); the folders were checked to exist.
    return Path(os.path.realpath(path))


def _nested_sql(folder: Path, root: Path) -> list[str]:
    """The subfolders of ``folder`` holding .sql files, when ``folder`` itself holds none ([] otherwise)."""
    try:
        with os.scandir(folder) as entries:
            if any(e.name.endswith(".sql") and e.is_file() for e in entries):
                return []
    except OSError:
        return []  # unreadable: sql.load says so when it reads the folder
    found = [
        Path(here).relative_to(root).as_posix()
        for here, _, files in os.walk(folder)  # symbolic links to folders are not followed: no loops
        if any(f.endswith(".sql") for f in files)
    ]
    return sorted(found)


def _parse(root: Path, pyproject: Path, table: object) -> Project:
    def fail(key: str, problem: str, remedy: str) -> ConfigError:
        where = f"[tool.datalayer] {key}" if key else "[tool.datalayer]"
        return ConfigError(f"{where} in {pyproject} {problem}; {remedy}", variable=f"tool.datalayer.{key}".rstrip("."))

    if not isinstance(table, dict):
        raise fail("", f"must be a table, got {type(table).__name__}", "write it as a [tool.datalayer] section")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise fail(unknown[0], "is not a setting", f"the settings are {', '.join(_KEYS)} (a typo?)")

    def strings(key: str, remedy: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            got = type(value).__name__ if not isinstance(value, list) else "a list holding a non-string"
            raise fail(key, f"must be a list of strings, got {got}", remedy)
        seen: set[str] = set()
        for v in value:
            if v in seen:
                raise fail(key, f"names {v!r} twice", "keep one")
            seen.add(v)
        return value

    def folders(key: str) -> tuple[Path, ...]:
        out: list[Path] = []
        seen: dict[Path, str] = {}  # the folder a link leads to -> the entry as written
        for text in strings(key, f'write {key} = ["{key}"] (folders relative to the project root)'):
            rel = PurePosixPath(text.replace("\\", "/"))
            if rel.is_absolute() or Path(text).is_absolute() or ".." in rel.parts or not rel.parts:
                raise fail(
                    key, f"names {text!r}, which is not a folder inside the project", "write a path relative to it"
                )
            path = root.joinpath(*rel.parts)
            if problem := _problem(path, folder=True):
                raise fail(key, f"names {text!r}, but {path} {problem}", "create it or fix the path")
            real = _real(path)
            if real in seen:
                raise fail(key, f"names {seen[real]!r} and {text!r}, both {real}: one folder twice", "keep one")
            nested = _nested_sql(path, root) if key == "sql" else []
            if nested:
                shown = ", ".join(f'"{n}"' for n in nested[:5]) + (", ..." if len(nested) > 5 else "")
                raise fail(
                    key,
                    f"names {text!r}, whose .sql files are all in subfolders, and named queries are read from "
                    "the folder itself only",
                    f"list the subfolders instead: sql = [{shown}]",
                )
            seen[real] = text
            out.append(path)
        return tuple(out)

    sql, migrations = folders("sql"), folders("migrations")
    for key, paths, builtin in (("sql", sql, "sql"), ("migrations", migrations, "migrations")):
        own = _real(_find(builtin))
        if any(_real(p) == own for p in paths):
            raise fail(
                key, f"names datalayer's built-in {builtin}/ folder", "leave it out: builtin = true brings it in"
            )
    queries = {_real(p): p for p in sql}
    for folder in migrations:
        if (also := queries.get(_real(folder))) is None:
            continue
        same = "" if also == folder else f", as {also} and {folder} both lead to {_real(folder)}"
        raise fail(
            "migrations",
            f"shares {folder} with sql{same} (yoyo would run the named queries as migrations)",
            "keep queries and migrations in separate folders",
        )
    modules = strings("modules", 'write modules = ["myservice.repo"] (dotted module names)')
    for m in modules:
        if not all(part.isidentifier() and not keyword.iskeyword(part) for part in m.split(".")):
            raise fail("modules", f"names {m!r}, which is not a dotted module name", 'write e.g. "notes.repo"')
    builtin = table.get("builtin", True)
    if not isinstance(builtin, bool):
        raise fail("builtin", f"must be true or false, got {type(builtin).__name__}", "write builtin = true or false")
    prefix = table.get("test_database_prefix", DEFAULT_TEST_DATABASE_PREFIX)
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise fail(
            "test_database_prefix",
            f"must be 1-40 lower-case letters, digits and _ (not starting with a digit), got {prefix!r}",
            f'write e.g. test_database_prefix = "{DEFAULT_TEST_DATABASE_PREFIX}"',
        )
    return Project(
        root=root,
        sql=sql,
        migrations=migrations,
        modules=tuple(modules),
        builtin=builtin,
        test_database_prefix=prefix,
        declared=True,
        pyproject=pyproject,
    )


@contextmanager
def project_importable(project: Project) -> Iterator[None]:
    """Within the block the project's root is first on ``sys.path``, so its ``modules`` import."""
    entry = str(project.root)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
