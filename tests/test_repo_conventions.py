"""The repositories follow one set of conventions; this module inspects every one of them for it.

1. They use only the public toolkit (``datalayer.sql``, ``datalayer.project``) and no private datalayer
   module but their own package's helpers.
2. Argument checks come from one place, ``datalayer.repos._common``: a repository module raises no
   ValidationError of its own, and every argument of every function reaches a check before its query.
3. The keyword a function takes is the name of the SQL parameter it becomes, and every SQL parameter is
   a keyword of the module, unless the exceptions below say why not.
4. Every write of an owned row (analyses, files, tool generations) takes ``user_id`` and passes it to
   its query, which matches only that user's rows.
5. The two status machines are one: the moves of ``_status.TRANSITIONS``, for analyses and generations.

A new repository module is found and inspected without being listed here: the async sources
(``users_async`` …) as well as the sync modules generated from them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
from collections.abc import Callable, Iterator
from typing import Any, get_type_hints

import pytest
from factories import analysis, generation, user

import datalayer.repos
from datalayer import IllegalTransition, NotFound, ValidationError, sql
from datalayer import data_analysis_repo as analyses
from datalayer import tool_generation_repo as generations
from datalayer.repos import _status, _status_async
from datalayer.repos._status import TRANSITIONS, StatusMachine

ENTITY_MODULES = sorted(
    f"datalayer.repos.{m.name}" for m in pkgutil.iter_modules(datalayer.repos.__path__) if not m.name.startswith("_")
)
ALL_MODULES = sorted(f"datalayer.repos.{m.name}" for m in pkgutil.iter_modules(datalayer.repos.__path__))
# The status machine of the sync modules and that of their async sources.
MACHINES = (StatusMachine, _status_async.StatusMachine)

# ------------------------------------------------------------------------------ justified exceptions

# The exceptions below name the sync module; they hold for its async source (``<name>_async``) too.

# Private datalayer modules a repository module may import, and why.
PRIVATE_IMPORTS = {
    ("datalayer.repos._common", "datalayer._jsonb"): "jsonb's float spelling, shared with the log record, has "
    "no public home yet",
    ("datalayer.repos._common", "datalayer._run"): "check_connection tells a closed connection (ValidationError) "
    "from a lost one (TransientError); system_log needs it before its partition work, and it has no public home",
    ("datalayer.repos._common", "datalayer._run_cursor_async"): "the same check for the async sources "
    "(check_aconnection, renamed to check_connection in their sync twins)",
    ("datalayer.repos.users", "datalayer._acompat"): "argon2 runs through blocking (the async form: ablocking, in a "
    "worker thread), datalayer's one pair of twins for CPU work",
}

# Where a repository module builds a ValidationError itself, and why.
OWN_VALIDATION = {
    ("datalayer.repos.system_log", "bulk_insert"): "catches the checks' ValidationError to name the event's "
    "position (through _common.within): a re-raise, not a check",
}

# Function keywords that are no SQL parameter, and why.
KEYWORD_NOT_A_PARAMETER = {
    "limit": "a keyset listing fetches limit + 1 rows (:fetch) to know whether there is more",
    "after": "the cursor is decoded into the sort key of the last row (:after_created, :after_id)",
    "page": "a page number becomes :offset",
    "order": "picks one of two queries, each served by its own index",
    "password": "hashed (argon2) into :hashed_password",
    "events": "COPY takes rows, not named parameters",
    "rows": "COPY takes rows, not named parameters",
}
FUNCTION_KEYWORD_NOT_A_PARAMETER = {
    ("datalayer.repos.users", "get_by_email", "email"): "an address is looked up by its identity key (:email_key)",
}

# SQL parameters that are no keyword of their module, and why.
DERIVED_PARAMETERS = {
    "fetch": "limit + 1 (see limit)",
    "after_created": "from the cursor (see after)",
    "after_id": "from the cursor (see after)",
    "offset": "from the page number (see page)",
    "to_status": "the move start/complete/fail makes",
    "from_status": "the status that move starts from, out of _status.TRANSITIONS",
    "email_key": "computed from email (datalayer.text.email_key), unique",
    "set_checksum": "whether update was given checksum at all (checksum=None clears it)",
}

# Modules whose rows belong to a user: every write takes user_id (the sync modules and their sources).
OWNED = tuple(
    f"datalayer.repos.{m}{form}" for m in ("analyses", "files", "tool_generations") for form in ("", "_async")
)

Function = ast.FunctionDef | ast.AsyncFunctionDef


# ------------------------------------------------------------------------------------- inspection


def _twin(name: str) -> str:
    """The sync module generated from ``name`` when it is an async source (``users_async``), else ``name``."""
    return name.removesuffix("_async")


def _tree(module: types.ModuleType) -> ast.Module:
    return ast.parse(inspect.getsource(module))


def _functions(module: types.ModuleType) -> dict[str, Function]:
    return {n.name: n for n in _tree(module).body if isinstance(n, Function)}


def _public_functions(module: types.ModuleType) -> dict[str, Function]:
    names = set(module.__all__)
    return {name: f for name, f in _functions(module).items() if name in names}


def _params(fn: Function) -> list[str]:
    a = fn.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    if a.vararg:
        names.append(a.vararg.arg)
    if a.kwarg:
        names.append(a.kwarg.arg)
    return [n for n in names if n != "db"]


def _names_in(node: ast.AST) -> Iterator[str]:
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            yield n.id


def _queries_used(module: types.ModuleType, fn: Function, seen: set[str] | None = None) -> list[Any]:
    """The bound queries ``fn`` runs: directly, through the module's functions, or a status machine."""
    seen = set() if seen is None else seen
    functions = _functions(module)
    found: list[Any] = []
    for name in set(_names_in(fn)):
        value = getattr(module, name, None)
        if isinstance(value, sql.BoundQuery):
            found.append(value)
        elif isinstance(value, MACHINES):
            found += [value.transition, value.status_of]
        elif name in functions and name not in seen:
            seen.add(name)
            found += _queries_used(module, functions[name], seen)
    return found


def _changes_keys(module: types.ModuleType, name: str) -> list[str]:
    """The keys of the TypedDict behind ``**changes: Unpack[...]`` of ``name``, or []."""
    hints = get_type_hints(getattr(module, name), include_extras=True)
    unpacked = hints.get("changes")
    if unpacked is None:
        return []
    (typed_dict,) = unpacked.__args__
    return list(typed_dict.__annotations__)


def _imports(tree: ast.AST) -> Iterator[str]:
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module:
            yield n.module
            if n.module == "datalayer":  # from datalayer import _jsonb
                yield from (f"datalayer.{a.name}" for a in n.names)
        elif isinstance(n, ast.Import):
            yield from (a.name for a in n.names)


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") and part != "__future__" for part in module_name.split("."))


# --------------------------------------------------------------------------------------- 1. toolkit


def test_the_repository_modules_are_found() -> None:
    # The inspection below covers whatever the package holds: this pins that it found the six.
    assert {"analyses", "cache_entries", "files", "system_log", "tool_generations", "users"} <= {
        m.rsplit(".", 1)[1] for m in ENTITY_MODULES
    }


@pytest.mark.parametrize("name", ALL_MODULES)
def test_only_public_datalayer_modules_are_imported(name: str) -> None:
    module = importlib.import_module(name)
    private = {
        m
        for m in _imports(_tree(module))
        if m.startswith("datalayer") and _is_private(m) and not m.startswith("datalayer.repos._")
    }
    unjustified = {m for m in private if (_twin(name), m) not in PRIVATE_IMPORTS}
    assert not unjustified, f"{name} imports private {sorted(unjustified)}; use the public toolkit or repos/_common"


@pytest.mark.parametrize("name", ENTITY_MODULES)
def test_queries_are_bound_through_the_public_toolkit_to_the_builtin_sql(name: str) -> None:
    module = importlib.import_module(name)
    bound = [v for v in vars(module).values() if isinstance(v, sql.BoundQuery)]
    bound += [q for v in vars(module).values() if isinstance(v, MACHINES) for q in (v.transition, v.status_of)]
    assert bound, f"{name} binds no query"
    for b in bound:
        assert b.query.cardinality in sql.CARDINALITIES, f"{b.query.location} is not defined in its file"
        assert b.query.file.startswith("sql/"), f"{b.query.location} is not a built-in query file"
    # What an async source binds exactly as its generated twin does counts once, as the twin's.
    twin = _twin(name)
    importlib.import_module(twin)
    assert {b.module for b in sql.bindings() if b.query is not None and b.query.file == bound[0].query.file} >= {twin}


# ------------------------------------------------------------------------------------ 2. the checks


@pytest.mark.parametrize("name", ENTITY_MODULES)
def test_no_module_makes_checks_of_its_own(name: str) -> None:
    module = importlib.import_module(name)
    for fname, fn in _functions(module).items():
        builds = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and "ValidationError" in set(_names_in(n.func))]
        if builds and (_twin(name), fname) not in OWN_VALIDATION:
            pytest.fail(f"{name}.{fname} builds a ValidationError itself: put the check in repos/_common.py")
        assert not fname.startswith(("check_", "_check", "optional_")), f"{name}.{fname}: checks live in _common"
    assert "datalayer.text" not in set(_imports(_tree(module))), f"{name}: text checks come through _common"


def _checkers(module: types.ModuleType) -> set[str]:
    tree = _tree(module)
    imported = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "datalayer.repos._common"
        for a in n.names
    }
    return imported | set(_functions(module))


def _reaches_a_check(fn: Function, param: str, checkers: set[str]) -> bool:
    for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
        f = call.func
        named = isinstance(f, ast.Name) and f.id in checkers
        # _pages.by_time / _status.start …: the page helpers and the status machine check what they take
        helper = (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and f.value.id in ("_pages", "_pages_async", "_status")
        )
        if named or helper:
            args = [*call.args, *(k.value for k in call.keywords)]
            if any(param in set(_names_in(a)) for a in args):
                return True
    return False


@pytest.mark.parametrize("name", ENTITY_MODULES)
def test_every_argument_reaches_a_check(name: str) -> None:
    module = importlib.import_module(name)
    checkers = _checkers(module)
    unchecked = [
        f"{fname}({param})"
        for fname, fn in _functions(module).items()
        for param in _params(fn)
        if not _reaches_a_check(fn, param, checkers)
    ]
    assert not unchecked, f"{name}: arguments that reach no check of repos/_common: {unchecked}"


def test_the_check_finder_finds_an_unchecked_argument() -> None:
    # The inspection itself must be able to fail.
    fn = ast.parse("def f(db, a, b):\n    return q.one(db, a=check_id(a, 'a'), b=b)\n").body[0]
    assert isinstance(fn, ast.FunctionDef)
    assert _reaches_a_check(fn, "a", {"check_id"}) and not _reaches_a_check(fn, "b", {"check_id"})


# --------------------------------------------------------------------------------- 3. one vocabulary


@pytest.mark.parametrize("name", ENTITY_MODULES)
def test_function_keywords_are_the_sql_parameters(name: str) -> None:
    module = importlib.import_module(name)
    wrong = []
    for fname, fn in _public_functions(module).items():
        queries = _queries_used(module, fn)
        if not queries:
            continue
        used = {p for q in queries for p in q.query.params}
        keywords = [p for p in _params(fn) if p != "changes"] + _changes_keys(module, fname)
        for kw in keywords:
            if kw in used or kw in KEYWORD_NOT_A_PARAMETER:
                continue
            if (_twin(name), fname, kw) in FUNCTION_KEYWORD_NOT_A_PARAMETER:
                continue
            wrong.append(f"{fname}({kw}) runs {sorted(used)}")
    assert not wrong, f"{name}: keywords that are no parameter of the SQL they run: {wrong}"


@pytest.mark.parametrize("name", ENTITY_MODULES)
def test_sql_parameters_are_keywords_of_the_module(name: str) -> None:
    module = importlib.import_module(name)
    keywords: set[str] = set()
    params: dict[str, set[str]] = {}
    for fname, fn in _public_functions(module).items():
        keywords |= set(_params(fn)) | set(_changes_keys(module, fname))
        for q in _queries_used(module, fn):
            for p in q.query.params:
                params.setdefault(p, set()).add(q.query.location)
    strays = {p: sorted(where) for p, where in params.items() if p not in keywords and p not in DERIVED_PARAMETERS}
    assert not strays, f"{name}: SQL parameters no function of the module takes by that name: {strays}"


# ------------------------------------------------------------------------------- 4. owner scoping


@pytest.mark.parametrize("name", OWNED)
def test_every_write_of_an_owned_row_takes_and_passes_the_owner(name: str) -> None:
    module = importlib.import_module(name)
    writes = 0
    for fname, fn in _public_functions(module).items():
        written = [q for q in _queries_used(module, fn) if not q.query.read_only]
        if not written:
            continue
        writes += 1
        assert "user_id" in _params(fn), f"{name}.{fname} writes owned rows without taking user_id"
        for q in written:
            assert "user_id" in q.query.params, f"{q.query.location} (run by {name}.{fname}) does not scope by :user_id"
    assert writes >= 3


def test_owner_scoped_file_writes(db: Any) -> None:
    from datalayer import analysis_file_repo as files

    ann, bob = user(db), user(db)
    a = analysis(db, ann)
    args: dict[str, Any] = {"filename": "f.csv", "file_type": "csv", "size_bytes": 1, "storage_uri": "s3://b/f"}
    with pytest.raises(NotFound, match=f"analysis {a.id} does not exist"):
        files.create(db, analysis_id=a.id, user_id=bob.id, **args)
    assert files.list_for_analysis(db, a.id) == []
    f = files.create(db, analysis_id=a.id, user_id=ann.id, **args)
    assert files.update(db, f.id, user_id=bob.id, filename="stolen.csv") is None
    assert files.get_by_id(db, f.id) == f
    renamed = files.update(db, f.id, user_id=ann.id, filename="mine.csv")
    assert renamed is not None and renamed.filename == "mine.csv"
    with pytest.raises(ValidationError) as e:
        files.update(db, f.id, user_id=0, filename="x")
    assert list(e.value.errors) == ["user_id"]


# ----------------------------------------------------------------------------- 5. one status machine

ENTITIES: list[tuple[Any, Callable[[Any, Any], Any], str, str]] = [
    (analyses, analysis, "data_analyses", "result"),
    (generations, generation, "tool_generations", "output"),
]


_PATH_TO = {
    "pending": (),
    "running": ("running",),
    "completed": ("running", "completed"),
    "failed": ("running", "failed"),
}


def _move(repo: Any, db: Any, ident: int, target: str, payload: str) -> Any:
    if target == "running":
        return repo.start(db, ident)
    if target == "completed":
        return repo.complete(db, ident, **{payload: [1, "two"]})
    return repo.fail(db, ident, error="boom")


@pytest.mark.parametrize(("repo", "make", "table", "payload"), ENTITIES, ids=["analyses", "tool_generations"])
@pytest.mark.parametrize("target", sorted(TRANSITIONS))
def test_each_move_succeeds_from_its_one_status_only(
    db: Any, repo: Any, make: Callable[[Any, Any], Any], table: str, payload: str, target: str
) -> None:
    owner = user(db)
    for current in _status.STATUSES:
        row = make(db, owner)
        for step in _PATH_TO[current]:  # the lifecycle CHECK allows each status only with its timestamps
            _move(repo, db, row.id, step, payload)
        assert repo.get_by_id(db, row.id).status == current
        if current == TRANSITIONS[target]:
            moved = _move(repo, db, row.id, target, payload)
            assert moved.status == target
            assert (getattr(moved, payload) == [1, "two"]) is (target == "completed")
            assert (moved.error == "boom") is (target == "failed")
        else:
            with pytest.raises(IllegalTransition) as e:
                _move(repo, db, row.id, target, payload)
            assert (e.value.current, e.value.target) == (current, target)
            assert f"only from {TRANSITIONS[target]}" in str(e.value) and _status.PATH in str(e.value)


@pytest.mark.parametrize(("repo", "make", "table", "payload"), ENTITIES, ids=["analyses", "tool_generations"])
def test_the_machine_refuses_the_same_way_for_both(
    db: Any, repo: Any, make: Callable[[Any, Any], Any], table: str, payload: str
) -> None:
    ann, bob = user(db), user(db)
    row = make(db, ann)
    kind = "analysis" if repo is analyses else "tool generation"
    with pytest.raises(NotFound, match=f"{kind} {row.id} does not exist"):
        repo.start(db, row.id, user_id=bob.id)
    repo.start(db, row.id, user_id=ann.id)
    with pytest.raises(ValidationError) as e:
        repo.complete(db, row.id, **{payload: None})
    assert list(e.value.errors) == [payload]
    with pytest.raises(ValidationError) as e:
        repo.fail(db, row.id, error="")
    assert list(e.value.errors) == ["error"]
    assert repo.get_by_id(db, row.id).status == "running"
