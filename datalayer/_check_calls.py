"""Where bound queries are called, read from the modules' source and resolved against their objects.

A bound query is found by identity, not by name: ``_get = notes.bind(…)``, an alias of it, ``from repo
import _get``, ``repo._get`` from another module and ``q = _a if newest else _b`` all resolve to the same
objects. Calls whose parameters cannot be seen (``**kwargs``, ``functools.partial``, a query handed to a
helper or stored in a container, reached by ``getattr`` with a computed name or through ``vars()``) are
reported as unverifiable: the run time check of exact parameters covers them. ``getattr(repo, "_get")``
with a constant name resolves like ``repo._get``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import types
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = ["METHODS", "Use", "find_uses", "is_bound", "sync_method"]

_SYNC = ("one", "maybe", "many", "scalar", "exec", "copy")
# The async twins are the same names with an "a" (``await q.amaybe(adb, ...)``).
METHODS = frozenset({*_SYNC, *(f"a{m}" for m in _SYNC), "copy_in"})


def sync_method(method: str) -> str:
    """The cardinality method a (sync or async) method name stands for: ``amaybe`` -> ``maybe``."""
    return method[1:] if method[1:] in _SYNC and method[0] == "a" else method


def is_bound(value: object) -> bool:
    """Is ``value`` a bound query (``datalayer.sql.BoundQuery`` or the older ``_run.Bound``)?"""
    if type(value).__name__ not in ("Bound", "BoundQuery"):
        return False
    return hasattr(value, "query") and hasattr(value, "one")


def query_key(bound: Any) -> tuple[str, str]:
    q = bound.query
    return (str(q.file), str(q.name))


@attrs.frozen
class Use:
    """One place a bound query is used."""

    method: str | None  # the method called, None when the query object itself is handed on
    kwargs: frozenset[str]
    splat: bool  # ** arguments
    positional: int  # positional arguments after the connection
    where: str  # "notes/repo.py:12"
    unverifiable: str | None = None  # why check cannot see the parameters


def find_uses(
    modules: Iterable[types.ModuleType], relative: Any, failures: list[str]
) -> dict[tuple[str, str], list[Use]]:
    """Every use of a bound query in ``modules``, by the query's (file, name); modules whose source
    could not be read are added to ``failures``."""
    uses: dict[tuple[str, str], list[Use]] = {}
    seen: set[str] = set()
    for module in modules:
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        try:
            source = inspect.getsource(module)
            path = inspect.getsourcefile(module) or module.__name__
        except (OSError, TypeError):
            continue
        try:
            _Finder(vars(module), str(relative(path)), uses).visit(ast.parse(source, filename=path))
        except Exception as e:  # one module's source must never stop the check
            failures.append(f"{module.__name__}: {type(e).__name__}: {e}")
    return uses


class _Finder(ast.NodeVisitor):
    def __init__(self, namespace: dict[str, Any], file: str, uses: dict[tuple[str, str], list[Use]]) -> None:
        self.ns = namespace
        self.file = file
        self.uses = uses
        self.env: list[dict[str, list[Any]]] = [{}]
        self.handled: set[int] = set()

    # -------------------------------------------------------------------------- resolution

    def resolve(self, node: ast.AST) -> list[Any]:
        """The bound queries ``node`` evaluates to ([] when it is not one)."""
        if isinstance(node, ast.Name):
            for env in reversed(self.env):
                if node.id in env:
                    found: list[Any] = env[node.id]
                    return found
            value: object = self.ns.get(node.id)
            return [value] if is_bound(value) else []
        if isinstance(node, ast.Attribute):
            obj = self._object(node)
            return [obj] if is_bound(obj) else []
        if isinstance(node, ast.IfExp):
            return self.resolve(node.body) + self.resolve(node.orelse)
        if (owner := self._getattr_owner(node)) is not None and isinstance(node, ast.Call) and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found = inspect.getattr_static(owner, name.value, None)
                return [found] if is_bound(found) else []
        return []

    def _getattr_owner(self, node: ast.AST) -> Any:
        """The module or class ``getattr(owner, name…)`` / ``vars(owner)`` / ``owner.__dict__`` reads."""
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            base = self._object(node.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "vars")
            and node.func.id not in self.ns
            and node.args
            and not any(node.func.id in env for env in self.env)
        ):
            if node.func.id == "getattr" and len(node.args) < 2:
                return None
            base = self._object(node.args[0])
        else:
            return None
        return base if isinstance(base, types.ModuleType) or inspect.isclass(base) else None

    def _computed_access(self, node: ast.AST, where: str) -> None:
        """A bound query reached by a name check cannot read: a note on every query the owner holds."""
        owner = self._getattr_owner(node)
        if owner is None or (isinstance(node, ast.Call) and self.resolve(node)):
            return
        name = node.args[1] if isinstance(node, ast.Call) and len(node.args) > 1 else None
        if isinstance(name, ast.Constant):
            return  # a constant name of something that is no bound query
        held = [v for v in vars(owner).values() if is_bound(v)]
        why = f"reached through {ast.unparse(node)}, a name check cannot read: its calls cannot be followed"
        self.add(held, Use(None, frozenset(), True, 0, where, why))

    def _object(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return self.ns.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self._object(node.value)
            if isinstance(base, types.ModuleType) or inspect.isclass(base):
                return inspect.getattr_static(base, node.attr, None)
        return None

    def add(self, bounds: list[Any], use: Use) -> None:
        for b in bounds:
            self.uses.setdefault(query_key(b), []).append(use)

    def _bind_keys(self, node: ast.AST) -> list[tuple[str, str]]:
        """The query a ``queries.bind("name", …)`` (or ``bind(queries, "name", …)``) call binds."""
        if not isinstance(node, ast.Call):
            return []
        args = list(node.args)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "bind":
            owner = self._object(node.func.value)
        elif isinstance(node.func, ast.Name) and node.func.id == "bind" and args:
            owner = self._object(args.pop(0))
        else:
            return []
        queries: Any = getattr(owner, "queries", None)
        if not args or not isinstance(args[0], ast.Constant) or not hasattr(queries, "get"):
            return []
        query = queries.get(args[0].value)
        return [] if query is None else [(str(query.file), str(query.name))]

    # ---------------------------------------------------------------------------- scopes

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        env: dict[str, list[Any]] = {}
        self.env.append(env)
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:  # local aliases, flow-insensitively: every assignment counts
            for sub in ast.walk(stmt):
                if isinstance(sub, ast.Assign | ast.AnnAssign) and sub.value is not None:
                    targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                    found = self.resolve(sub.value)
                    for t in targets:
                        if isinstance(t, ast.Name) and found:
                            env.setdefault(t.id, []).extend(found)
                        if found:
                            self._mark(sub.value)
        self.generic_visit(node)
        self.env.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(self.env) == 1 and self.resolve(node.value):
            self._mark(node.value)  # a module-level alias: its uses resolve by identity
        if all(isinstance(t, ast.Name) for t in node.targets):
            self._mark(node.value)  # `_get = notes.bind(…)`: its uses are found through the name
        self.generic_visit(node)

    def _mark(self, node: ast.AST) -> None:
        self.handled.add(id(node))
        if isinstance(node, ast.IfExp):
            self._mark(node.body)
            self._mark(node.orelse)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if isinstance(node.target, ast.Name) and node.value is not None:
            self._mark(node.value)
        self.generic_visit(node)

    # ----------------------------------------------------------------------------- uses

    def visit_Call(self, node: ast.Call) -> None:
        where = f"{self.file}:{node.lineno}"
        func = node.func
        self._computed_access(node, where)
        if id(node) not in self.handled and (keys := self._bind_keys(node)):
            why = "bound without a name of its own (inside a call or a container): its calls cannot be followed"
            for key in keys:
                self.uses.setdefault(key, []).append(Use(None, frozenset(), True, 0, where, why))
        if isinstance(func, ast.Attribute) and func.attr in METHODS and (bounds := self.resolve(func.value)):
            self.handled.add(id(func.value))
            self.add(
                bounds,
                Use(
                    method=func.attr,
                    kwargs=frozenset(k.arg for k in node.keywords if k.arg is not None),
                    splat=any(k.arg is None for k in node.keywords),
                    positional=max(len(node.args) - 1, 0),
                    where=where,
                    unverifiable=None,
                ),
            )
        elif self._is_partial(func) and node.args:
            target = node.args[0]
            if isinstance(target, ast.Attribute) and target.attr in METHODS and (bounds := self.resolve(target.value)):
                self.handled.add(id(target.value))
                kwargs = frozenset(k.arg for k in node.keywords if k.arg is not None)
                self.add(
                    bounds,
                    Use(target.attr, kwargs, True, 0, where, "called through functools.partial"),
                )
        callee = ast.unparse(func) if not isinstance(func, ast.Lambda) else "a lambda"
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if id(arg) in self.handled:
                continue
            if bounds := self.resolve(arg):
                self.handled.add(id(arg))
                self.add(bounds, Use(None, frozenset(), True, 0, where, f"handed to {callee}()"))
            elif isinstance(arg, ast.Attribute) and arg.attr in METHODS and (bounds := self.resolve(arg.value)):
                self.handled.add(id(arg.value))
                self.add(bounds, Use(arg.attr, frozenset(), True, 0, where, f".{arg.attr} handed to {callee}()"))
        self.generic_visit(node)

    def _is_partial(self, func: ast.AST) -> bool:
        return self._object(func) is functools.partial

    def visit_Name(self, node: ast.Name) -> None:
        self._value_use(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._computed_access(node, f"{self.file}:{node.lineno}")
        if not self._value_use(node):
            self.generic_visit(node)

    def _value_use(self, node: ast.Name | ast.Attribute) -> bool:
        if id(node) in self.handled or not isinstance(node.ctx, ast.Load):
            return False
        if bounds := self.resolve(node):
            self.handled.add(id(node))
            where = f"{self.file}:{node.lineno}"
            self.add(bounds, Use(None, frozenset(), True, 0, where, "used as a value (stored or returned)"))
            return True
        return False
