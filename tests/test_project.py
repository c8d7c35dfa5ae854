"""[tool.datalayer] in a service's pyproject.toml: finding the project, reading it, refusing what is wrong."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from datalayer.errors import ConfigError
from datalayer.project import (
    BUILTIN_MODULES,
    MigrationSource,
    Project,
    builtin_migrations_dir,
    builtin_sql_dir,
    find_project,
    load_project,
    project_importable,
)

REPO = Path(__file__).resolve().parent.parent


def _project(tmp_path: Path, table: str | None, *, folders: tuple[str, ...] = ("sql", "migrations")) -> Path:
    root = tmp_path / "svc"
    root.mkdir()
    for f in folders:
        (root / f).mkdir(parents=True)
    text = '[project]\nname = "svc"\n'
    if table is not None:
        text += "\n[tool.datalayer]\n" + table
    (root / "pyproject.toml").write_text(text)
    return root


def test_no_pyproject_up_the_tree_is_the_builtin_schema_only(tmp_path: Path) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    assert not any((d / "pyproject.toml").exists() for d in (here, *here.parents))
    p = find_project(here, environ={})
    assert p == Project(root=here)
    assert (p.declared, p.builtin, p.sql, p.migrations, p.modules) == (False, True, (), (), ())
    assert p.test_database_prefix == "datalayer_test"
    assert p.migration_sources() == (MigrationSource("datalayer", builtin_migrations_dir(), builtin=True),)
    assert p.sql_folders() == (builtin_sql_dir(),)
    assert p.check_modules() == BUILTIN_MODULES
    # Messages name no file that does not exist.
    assert p.pyproject is None
    assert p.origin() == f"no pyproject.toml found from {here} up: the built-in schema only"


def test_a_pyproject_without_the_table_is_builtin_only_rooted_there(tmp_path: Path) -> None:
    root = _project(tmp_path, None)
    deep = root / "src" / "svc"
    deep.mkdir(parents=True)
    p = find_project(deep, environ={})
    assert p.root == root and not p.declared and p.builtin and p.migrations == ()
    assert p.pyproject == root / "pyproject.toml"
    assert p.origin() == f"{root / 'pyproject.toml'}, which has no [tool.datalayer]: the built-in schema only"
    assert load_project(root).origin() == p.origin()
    (tmp_path / "d").mkdir()
    declared = _project(tmp_path / "d", "")
    assert load_project(declared).origin() == str(declared / "pyproject.toml")
    assert Project(root=tmp_path, builtin=False).origin() == f"a Project built in code, root {tmp_path}"


def test_the_table_is_read_with_paths_from_the_root(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        """\
sql = ["sql", "queries/extra"]
migrations = ["migrations", "db/migrations"]
modules = ["svc.repo", "svc.other_repo"]
builtin = false
test_database_prefix = "svc_test"
""",
        folders=("sql", "queries/extra", "migrations", "db/migrations"),
    )
    p = find_project(root / "sql", environ={})  # found from below the root too
    assert p.declared and not p.builtin and p.root == root
    assert p.sql == (root / "sql", root / "queries" / "extra")
    assert p.migrations == (root / "migrations", root / "db" / "migrations")
    assert p.modules == ("svc.repo", "svc.other_repo") and p.test_database_prefix == "svc_test"
    assert [(s.name, s.path, s.builtin) for s in p.migration_sources()] == [
        ("migrations", root / "migrations", False),
        ("db/migrations", root / "db" / "migrations", False),
    ]
    assert p.sql_folders() == p.sql and p.check_modules() == p.modules


def test_builtin_true_puts_the_builtin_schema_first(tmp_path: Path) -> None:
    root = _project(tmp_path, 'sql = ["sql"]\nmigrations = ["migrations"]\nmodules = ["svc.repo"]\n')
    p = load_project(root)
    assert p.builtin and p.declared
    assert [s.name for s in p.migration_sources()] == ["datalayer", "migrations"]
    assert p.migration_sources()[0].builtin and p.migration_sources()[0].path == builtin_migrations_dir()
    assert p.sql_folders() == (builtin_sql_dir(), root / "sql")
    assert p.check_modules() == (*BUILTIN_MODULES, "svc.repo")


def test_an_empty_table_is_declared_with_the_defaults(tmp_path: Path) -> None:
    p = load_project(_project(tmp_path, ""))
    assert p.declared and p.builtin and p.sql == p.migrations == () and p.test_database_prefix == "datalayer_test"


def test_the_nearest_pyproject_wins(tmp_path: Path) -> None:
    outer = _project(tmp_path, 'modules = ["outer"]\n')
    inner = outer / "examples" / "notes"
    inner.mkdir(parents=True)
    (inner / "pyproject.toml").write_text('[tool.datalayer]\nmodules = ["notes.repo"]\nbuiltin = false\n')
    assert find_project(inner, environ={}).modules == ("notes.repo",)
    assert find_project(outer / "sql", environ={}).modules == ("outer",)


def test_datalayer_project_wins_over_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path, 'modules = ["svc.repo"]\n')
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    assert find_project(elsewhere, environ={"DATALAYER_PROJECT": str(root)}).modules == ("svc.repo",)
    monkeypatch.chdir(tmp_path)
    assert find_project(environ={"DATALAYER_PROJECT": "svc"}).root == root  # relative to the working directory
    assert find_project(environ={"DATALAYER_PROJECT": ""}).root == tmp_path  # empty means unset
    monkeypatch.setenv("DATALAYER_PROJECT", str(root))
    assert find_project(elsewhere).modules == ("svc.repo",)  # the process environment by default
    assert find_project(elsewhere, environ={}).modules == ()  # a mapping passed in is used as it is


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda t: t / "missing", "does not exist"),
        (lambda t: t / "svc" / "pyproject.toml", "is not a folder"),
        (lambda t: t / "svc" / "sql", "holds no pyproject.toml"),
    ],
)
def test_datalayer_project_must_be_a_project_folder(tmp_path: Path, make: Callable[[Path], Path], says: str) -> None:
    _project(tmp_path, "")
    folder = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        find_project(tmp_path, environ={"DATALAYER_PROJECT": str(folder)})
    assert e.value.variable == "DATALAYER_PROJECT"
    assert str(e.value).startswith("DATALAYER_PROJECT must be a project folder holding a pyproject.toml")
    assert says in str(e.value) and str(folder) in str(e.value)
    with pytest.raises(ConfigError, match="--project must be a project folder"):
        load_project(folder)
    with pytest.raises(ConfigError, match="control character"):
        find_project(tmp_path, environ={"DATALAYER_PROJECT": "svc\x00"})


def test_an_empty_project_folder_is_refused_not_taken_as_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(_project(tmp_path, ""))
    with pytest.raises(ConfigError, match=r"^--project needs a folder, got an empty value; give the folder") as e:
        load_project("")
    assert e.value.variable == "--project"
    assert find_project(environ={"DATALAYER_PROJECT": ""}).declared  # an empty variable still means unset


def test_a_removed_working_directory_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(ConfigError, match=r"^the working directory cannot be read \(No such file or directory\)"):
        find_project(environ={})
    with pytest.raises(ConfigError, match="working directory cannot be read"):
        load_project("svc")


# What stands where pyproject.toml should be, and what the error says about it.
BAD_FILES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "not UTF-8",
        lambda f: f.write_bytes(f.read_bytes() + b"\xff\xfe"),
        r"\(not UTF-8 text: byte 0xff on line 6\); save",
    ),
    ("nested", lambda f: f.write_text("a = " + "[" * 50_000 + "]" * 50_000), r"\(arrays or tables nested too deeply"),
    ("huge", lambda f: f.write_text("# x\n" * 1_100_000), r"\(larger than 4 MiB, far more than a pyproject.toml"),
    ("folder", lambda f: (f.unlink(), f.mkdir()), r"pyproject.toml is a folder, not a file;"),
    ("pipe", lambda f: (f.unlink(), os.mkfifo(f)), r"pyproject.toml is not a regular file \(a pipe or a device\?\);"),
    ("loop", lambda f: (f.unlink(), f.symlink_to(f)), r"pyproject.toml cannot be examined \(Too many levels of symb"),
    ("dangling", lambda f: (f.unlink(), f.symlink_to(f.parent / "gone")), r"a symbolic link that leads nowhere;"),
]


@pytest.mark.parametrize(("spoil", "says"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_an_unreadable_pyproject_is_a_config_error_naming_it(
    tmp_path: Path, spoil: Callable[[Path], None], says: str
) -> None:
    # An enclosing project: a broken pyproject.toml must stop the walk, not hand over the outer settings.
    (tmp_path / "pyproject.toml").write_text('[tool.datalayer]\nmodules = ["outer"]\n')
    root = _project(tmp_path, 'sql = ["sql"]\n')
    spoil(root / "pyproject.toml")
    with pytest.raises(ConfigError, match=says) as e:
        load_project(root)
    assert str(root / "pyproject.toml") in str(e.value) and e.value.variable == "--project"
    with pytest.raises(ConfigError, match=says) as e:
        find_project(root / "sql", environ={})
    assert str(root / "pyproject.toml") in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_a_pyproject_without_read_permission_is_a_config_error(tmp_path: Path) -> None:
    root = _project(tmp_path, "")
    (root / "pyproject.toml").chmod(0)
    with pytest.raises(ConfigError, match=r"cannot read .*pyproject.toml \(PermissionError: Permission denied\)"):
        load_project(root)


# (table text, the key the error names, what it says); folders sql/, migrations/, db/ and file README exist.
BAD_TABLES = [
    ('sqls = ["sql"]\n', "sqls", "is not a setting; the settings are sql, migrations, modules, builtin"),
    ('sql = "sql"\n', "sql", "must be a list of strings, got str"),
    ("sql = [1]\n", "sql", "must be a list of strings, got a list holding a non-string"),
    ('migrations = "migrations"\n', "migrations", "must be a list of strings"),
    ('modules = "svc.repo"\n', "modules", "must be a list of strings"),
    ('sql = ["nope"]\n', "sql", "does not exist; create it or fix the path"),
    ('migrations = ["README"]\n', "migrations", "is not a folder"),
    ('sql = ["../elsewhere"]\n', "sql", "not a folder inside the project; write a path relative to it"),
    ('sql = ["sql/../../elsewhere"]\n', "sql", "not a folder inside the project"),
    ('migrations = ["/tmp"]\n', "migrations", "not a folder inside the project"),
    ('migrations = ["."]\n', "migrations", "not a folder inside the project"),
    ('sql = ["sql", "sql"]\n', "sql", "names 'sql' twice; keep one"),
    ('sql = ["sql", "./sql/"]\n', "sql", "twice; keep one"),
    ('sql = ["db"]\nmigrations = ["db"]\n', "migrations", "with sql (yoyo would run the named queries"),
    ('sql = ["sql\\u0000"]\n', "sql", "is not a valid path (it holds a NUL character); create it or fix"),
    ('sql = ["loop"]\n', "sql", "cannot be examined (Too many levels of symbolic links)"),
    ('sql = ["dangling"]\n', "sql", "is a symbolic link that leads nowhere; create it or fix the path"),
    ('sql = ["sql", "alias"]\n', "sql", "names 'sql' and 'alias', both "),
    ('migrations = ["migrations", "alias-m"]\n', "migrations", "names 'migrations' and 'alias-m', both"),
    ('sql = ["alias"]\nmigrations = ["sql"]\n', "migrations", "svc/sql both lead to"),
    ('modules = ["svc.re\\u0000po"]\n', "modules", "is not a dotted module name"),
    ('modules = ["svc.repo", "svc.repo"]\n', "modules", "names 'svc.repo' twice"),
    ('modules = ["svc/repo"]\n', "modules", "is not a dotted module name"),
    ('modules = ["svc.class"]\n', "modules", "is not a dotted module name"),
    ('modules = [""]\n', "modules", "is not a dotted module name"),
    ('builtin = "false"\n', "builtin", "must be true or false, got str"),
    ("builtin = 0\n", "builtin", "must be true or false, got int"),
    ('test_database_prefix = "Svc"\n', "test_database_prefix", "lower-case"),
    ('test_database_prefix = "1svc"\n', "test_database_prefix", "not starting with a digit"),
    ('test_database_prefix = "svc-test"\n', "test_database_prefix", "lower-case letters, digits and _"),
    (f'test_database_prefix = "{"a" * 41}"\n', "test_database_prefix", "1-40"),
    ('test_database_prefix = ""\n', "test_database_prefix", "1-40"),
    ("test_database_prefix = 3\n", "test_database_prefix", "got 3"),
]


@pytest.mark.parametrize(("table", "key", "says"), BAD_TABLES, ids=[f"{k}:{t.strip()[:30]}" for t, k, _ in BAD_TABLES])
def test_a_bad_table_is_refused_naming_key_file_and_remedy(tmp_path: Path, table: str, key: str, says: str) -> None:
    root = _project(tmp_path, table, folders=("sql", "migrations", "db"))
    (root / "README").write_text("not a folder")
    (root / "loop").symlink_to(root / "loop")
    (root / "dangling").symlink_to(root / "nowhere")
    (root / "alias").symlink_to(root / "sql")
    (root / "alias-m").symlink_to("migrations")
    with pytest.raises(ConfigError) as e:
        find_project(root, environ={})
    text = str(e.value)
    assert text.startswith(f"[tool.datalayer] {key} in {root / 'pyproject.toml'} "), text
    assert says in text and "; " in text, text  # every message ends with what to do
    assert e.value.variable == f"tool.datalayer.{key}"


def test_the_builtin_folders_cannot_be_listed_as_the_services(tmp_path: Path) -> None:
    root = _project(tmp_path, "")
    (root / "builtin-migrations").symlink_to(builtin_migrations_dir())
    (root / "builtin-sql").symlink_to(builtin_sql_dir())
    for key, folder in (("migrations", "builtin-migrations"), ("sql", "builtin-sql")):
        (root / "pyproject.toml").write_text(f'[tool.datalayer]\n{key} = ["{folder}"]\nbuiltin = false\n')
        with pytest.raises(ConfigError, match=rf"\[tool.datalayer\] {key} in .* names datalayer's built-in {key}/"):
            load_project(root)


def test_sql_and_migrations_linked_to_one_folder_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    root = _project(tmp_path, 'sql = ["s"]\nmigrations = ["m"]\n', folders=())
    (root / "s").symlink_to(shared)
    (root / "m").symlink_to(shared)
    with pytest.raises(ConfigError) as e:
        load_project(root)
    assert str(e.value) == (
        f"[tool.datalayer] migrations in {root / 'pyproject.toml'} shares {root / 'm'} with sql, as {root / 's'} "
        f"and {root / 'm'} both lead to {shared} (yoyo would run the named queries as migrations); keep queries "
        "and migrations in separate folders"
    )


def test_a_sql_folder_with_queries_only_in_subfolders_says_to_list_them(tmp_path: Path) -> None:
    root = _project(tmp_path, 'sql = ["sql"]\n', folders=("sql/users", "sql/notes/archive", "sql/empty"))
    (root / "sql" / "users" / "users.sql").write_text("-- name: get :one\nSELECT 1;\n")
    (root / "sql" / "notes" / "archive" / "old.sql").write_text("-- name: old :one\nSELECT 1;\n")
    (root / "sql" / "README.md").write_text("queries by domain")
    with pytest.raises(ConfigError) as e:
        load_project(root)
    assert str(e.value) == (
        f"[tool.datalayer] sql in {root / 'pyproject.toml'} names 'sql', whose .sql files are all in subfolders, "
        "and named queries are read from the folder itself only; list the subfolders instead: "
        'sql = ["sql/notes/archive", "sql/users"]'
    )
    (root / "pyproject.toml").write_text('[tool.datalayer]\nsql = ["sql/users", "sql/notes/archive"]\n')
    assert load_project(root).sql == (root / "sql" / "users", root / "sql" / "notes" / "archive")
    # A folder with queries of its own (or none at all yet) may have other subfolders.
    (root / "sql" / "top.sql").write_text("-- name: top :one\nSELECT 1;\n")
    (root / "pyproject.toml").write_text('[tool.datalayer]\nsql = ["sql", "sql/empty"]\n')
    assert load_project(root).sql == (root / "sql", root / "sql" / "empty")


def test_a_symlinked_folder_inside_the_root_is_taken_as_written(tmp_path: Path) -> None:
    shared = tmp_path / "shared-sql"
    shared.mkdir()
    root = _project(tmp_path, 'sql = ["vendor/sql"]\n', folders=("vendor",))
    (root / "vendor" / "sql").symlink_to(shared)
    assert load_project(root).sql == (root / "vendor" / "sql",)


def test_a_table_that_is_not_a_table_or_a_broken_file_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path, None)
    (root / "pyproject.toml").write_text('[tool]\ndatalayer = "yes"\n')
    with pytest.raises(ConfigError, match=r"^\[tool.datalayer\] in .*pyproject.toml must be a table, got str"):
        load_project(root)
    (root / "pyproject.toml").write_text("[tool.datalayer\nsql = [")
    with pytest.raises(ConfigError, match=r"cannot read .*pyproject.toml \(TOMLDecodeError: .*\); fix the file"):
        find_project(root, environ={})


def test_a_project_built_directly_is_absolute_and_names_outside_folders_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    p = Project(root=Path("svc"), migrations=[Path("svc/db/migrations"), "/opt/m"], modules=["a.b"], builtin=False)
    assert p.root == tmp_path / "svc" and p.modules == ("a.b",)
    assert [s.name for s in p.migration_sources()] == ["db/migrations", "/opt/m"]


def test_project_importable_puts_the_root_first_on_sys_path_for_the_block(tmp_path: Path) -> None:
    root = _project(tmp_path, 'modules = ["svc_probe_mod"]\n')
    (root / "svc_probe_mod.py").write_text("VALUE = 42\n")
    p = load_project(root)
    with pytest.raises(ImportError):
        importlib.import_module("svc_probe_mod")
    try:
        with project_importable(p):
            assert sys.path[0] == str(root)
            assert importlib.import_module("svc_probe_mod").VALUE == 42
        assert str(root) not in sys.path
    finally:
        sys.modules.pop("svc_probe_mod", None)
    sys.path.append(str(root))  # already there: left where it is, and not removed
    try:
        with project_importable(p):
            assert sys.path[-1] == str(root)
        assert sys.path[-1] == str(root)
    finally:
        sys.path.remove(str(root))


def test_builtin_folders_of_a_checkout() -> None:
    # This test runs from a source checkout (or an editable install): the folders at its top.
    assert builtin_sql_dir() == REPO / "sql" and builtin_migrations_dir() == REPO / "migrations"
    assert (builtin_migrations_dir() / "0001.core-tables.sql").is_file()


def test_this_repository_is_the_builtin_schema_only() -> None:
    p = find_project(REPO, environ={})
    assert p.root == REPO and not p.declared and p.builtin


def test_builtin_modules_are_exactly_datalayers_modules_that_bind_queries() -> None:
    import datalayer
    from datalayer import sql

    for info in pkgutil.walk_packages(datalayer.__path__, "datalayer."):
        if info.name not in ("datalayer.testing", "datalayer.cli") and not info.name.startswith("datalayer._data"):
            importlib.import_module(info.name)
    bound = {b.module for b in sql.bindings() if b.module.startswith("datalayer.")}
    assert bound == set(BUILTIN_MODULES), "update BUILTIN_MODULES in datalayer/project.py"
    assert len(set(BUILTIN_MODULES)) == len(BUILTIN_MODULES)


def test_pyproject_is_read_nowhere_else() -> None:
    # This module (and config, for the environment) are the only readers of pyproject.toml.
    readers = sorted(
        p.relative_to(REPO).as_posix() for p in (REPO / "datalayer").rglob("*.py") if "tomllib" in p.read_text()
    )
    assert readers == ["datalayer/project.py"], readers
