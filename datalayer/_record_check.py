"""Does a record hold what its field types say? The run-time half of ``datalayer check``.

``check_record(value, cls)`` walks an attrs record (or any value against any type) and describes the
first mismatch, naming the field path (``files[2].size``) and the offending value's type, never the
value itself. Static analysis of SQL cannot prove every column non-null; the test plugin's strict mode
runs this on every record a bound query builds, so the service's own tests catch what it missed.

The rules:

- ``None`` passes only where the type allows it (``X | None``, ``Optional[X]``, ``Any``, ``object``).
- ``bool`` is not an ``int`` here (a boolean column in an ``int`` field is a mismatch), and an ``int``
  is not a ``bool``.
- ``float`` accepts ``int`` (PEP 484's numeric tower, which mypy applies: nothing is lost), never
  ``bool`` or ``Decimal``; ``Decimal`` accepts only ``Decimal`` (a ``numeric`` column).
- ``date`` refuses a ``datetime`` (a timestamp in a date field); ``datetime``, ``time``, ``UUID``,
  enums, ``str``, ``bytes`` and other classes are ``isinstance`` checks.
- ``list[X]``, ``set[X]``, ``frozenset[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]`` and
  their ``collections.abc`` forms check every element (dict entries are named by position,
  ``details{key #0}`` / ``details{value #0}``, because keys are data too).
- ``Literal[...]`` compares type and value (``Literal[1]`` refuses ``True``); ``Annotated``, ``NewType``,
  bounded ``TypeVar``s and generic records (``Page[User]``) are followed; attrs records nest.
- ``Any``, ``object`` and typing constructs that cannot be checked at run time accept everything.

Field types are resolved once per record class (``typing.get_type_hints``) and compiled into checker
functions, cached per type, so a check costs a few calls per field.
"""

from __future__ import annotations

import collections.abc
import enum
import threading
import types
import typing
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import attrs

__all__ = ["check_record"]


class _Mismatch:
    """Where (path segments, innermost first) and what went wrong; a message is built only on failure."""

    __slots__ = ("got_none", "path", "problem")

    def __init__(self, problem: str, *, got_none: bool = False) -> None:
        self.problem = problem
        self.got_none = got_none
        self.path: list[str] = []


_Checker = Callable[[object], _Mismatch | None]

_lock = threading.RLock()
_types: dict[object, _Checker | None] = {}  # plain types (no free type variables); None: accepts all
_records: dict[tuple[type, tuple[object, ...]], _Checker] = {}  # (record class, type arguments)


def check_record(value: object, cls: object) -> str | None:
    """Describe the first mismatch between ``value`` and the type ``cls`` (an attrs class, usually), or None.

    >>> check_record(Note(id=1, title=None), Note)  # doctest: +SKIP
    'field title: got None, expected str (not Optional)'
    """
    checker = _checker_for(cls)
    if checker is None:
        return None
    mismatch = checker(value)
    if mismatch is None:
        return None
    path = "".join(reversed(mismatch.path)).lstrip(".")
    suffix = " (not Optional)" if mismatch.got_none else ""
    return f"field {path}: {mismatch.problem}{suffix}" if path else f"{mismatch.problem}{suffix}"


def _checker_for(tp: object) -> _Checker | None:
    try:
        return _types[tp]
    except KeyError:
        pass
    except TypeError:  # an unhashable type form (a Literal of a list, say): compile it each time
        with _lock:
            return _Compiler().compile(tp, {})
    with _lock:
        compiler = _Compiler()
        checker = compiler.compile(tp, {})
        # Publish only complete checkers: a record being compiled is a placeholder until its fields are in.
        _records.update(compiler.records)
        _types.update(compiler.types)
        _types[tp] = checker
        return checker


def _describe(tp: object) -> str:
    """A short readable name for a type: ``list[AnalysisFile]``, ``int | None``, ``Literal['a', 'b']``."""
    if tp is type(None) or tp is None:
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(_describe(a) for a in args)
    if origin is tuple and not args:
        return "tuple[()]"
    if origin is not None and args:
        return f"{_describe(origin)}[{', '.join('...' if a is Ellipsis else _describe(a) for a in args)}]"
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _got(value: object, expected: str) -> _Mismatch:
    if value is None:
        return _Mismatch(f"got None, expected {expected}", got_none=True)
    return _Mismatch(f"got {type(value).__qualname__}, expected {expected}")


class _Compiler:
    """Compiles one type into a checker; records found on the way are published when all are complete."""

    def __init__(self) -> None:
        self.types: dict[object, _Checker | None] = {}
        self.records: dict[tuple[type, tuple[object, ...]], _Checker] = {}

    def compile(self, tp: object, tvars: dict[object, object]) -> _Checker | None:
        """A checker for ``tp`` (None when everything passes); ``tvars`` binds a generic record's parameters."""
        if not tvars:
            try:
                if tp in _types:
                    return _types[tp]
                if tp in self.types:
                    return self.types[tp]
            except TypeError:
                return self._compile(tp, tvars)
            checker = self._compile(tp, tvars)
            self.types[tp] = checker
            return checker
        return self._compile(tp, tvars)

    def _compile(self, tp: object, tvars: dict[object, object]) -> _Checker | None:
        if tp is Any or tp is object:
            return None
        if isinstance(tp, typing.TypeVar):
            if tp in tvars:
                return self.compile(tvars[tp], {})
            if tp.__bound__ is not None:
                return self.compile(tp.__bound__, tvars)
            if tp.__constraints__:
                return self._union(tp.__constraints__, tvars, _describe(tp))
            return None
        if tp is None or tp is type(None):
            return _none_checker
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            return self.compile(supertype, tvars)
        alias_type = getattr(typing, "TypeAliasType", None)  # Python 3.12's `type X = ...`
        if alias_type is not None and isinstance(tp, alias_type):
            return self.compile(tp.__value__, tvars)
        if tp is typing.LiteralString:
            return self.compile(str, tvars)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Annotated:
            return self.compile(args[0], tvars)
        if origin is typing.Literal:
            return _literal_checker(args, _describe(tp))
        if origin is typing.Union or origin is types.UnionType:
            return self._union(args, tvars, _describe(tp))
        if origin is not None and isinstance(origin, type) and attrs.has(origin):
            return self._record(origin, tuple(self._resolve(a, tvars) for a in args))
        if isinstance(tp, type) and attrs.has(tp):
            return self._record(tp, ())
        if origin is not None and isinstance(origin, type):
            return self._generic(origin, args, tvars, tp)
        if isinstance(tp, type):
            return _class_checker(tp)
        return None  # a typing construct with no run-time meaning (a Protocol, a ParamSpec, ...)

    def _resolve(self, arg: object, tvars: dict[object, object]) -> object:
        if isinstance(arg, typing.TypeVar):
            return tvars.get(arg, Any)
        return arg

    def _union(self, members: tuple[Any, ...], tvars: dict[object, object], expected: str) -> _Checker | None:
        allows_none = any(m is None or m is type(None) for m in members)
        checkers = [self.compile(m, tvars) for m in members if m is not None and m is not type(None)]
        if any(c is None for c in checkers):
            return None  # Any among the members
        others = [c for c in checkers if c is not None]

        def check_union(value: object) -> _Mismatch | None:
            if value is None:
                return None if allows_none else _got(value, expected)
            first: _Mismatch | None = None
            for checker in others:
                mismatch = checker(value)
                if mismatch is None:
                    return None
                first = first or mismatch
            # One non-None member (``X | None``) failing deeper inside: its own report names the inner path.
            return first if len(others) == 1 and first is not None and first.path else _got(value, expected)

        return check_union

    def _record(self, cls: type, args: tuple[object, ...]) -> _Checker:
        key = (cls, args)
        known = _records.get(key) or self.records.get(key)
        if known is not None:
            return known
        fields: list[tuple[str, _Checker]] = []
        problem: list[str] = []
        name = _describe(cls) if not args else f"{cls.__qualname__}[{', '.join(_describe(a) for a in args)}]"

        def check_fields(value: object) -> _Mismatch | None:
            if not isinstance(value, cls):
                return _got(value, name)
            if problem:
                return _Mismatch(problem[0])
            for field_name, checker in fields:
                mismatch = checker(getattr(value, field_name))
                if mismatch is not None:
                    mismatch.path.append("." + field_name)
                    return mismatch
            return None

        # Registered before its fields compile, so a record that contains itself (a tree) refers to itself.
        self.records[key] = check_fields
        try:
            hints = typing.get_type_hints(cls)
        except Exception as e:  # any failure to resolve (NameError, TypeError, ...) is reported alike
            problem.append(
                f"the field types of {cls.__qualname__} cannot be resolved ({type(e).__name__}: {e}); import the "
                "names its annotations use at run time (not only under TYPE_CHECKING), or turn strict records off"
            )
            return check_fields
        params = getattr(cls, "__parameters__", ())
        tvars: dict[object, object] = dict(zip(params, args, strict=False)) if args else {}
        for f in attrs.fields(cls):
            checker = self.compile(hints.get(f.name, Any), tvars)
            if checker is not None:
                fields.append((f.name, checker))
        return check_fields

    def _generic(self, origin: type, args: tuple[Any, ...], tvars: dict[object, object], tp: object) -> _Checker:
        expected = _describe(tp)
        if issubclass(origin, tuple) and not (len(args) == 2 and args[1] is Ellipsis):
            return self._fixed_tuple(args, tvars, expected)
        if issubclass(origin, collections.abc.Mapping) and len(args) == 2:
            return self._mapping(origin, args, tvars, expected)
        outer = _class_checker(origin, expected)
        iterable = issubclass(origin, (collections.abc.Collection, tuple)) and not issubclass(origin, (str, bytes))
        inner = self.compile(args[0], tvars) if args and iterable else None
        if inner is None:
            return outer
        element = inner

        def check_items(value: object) -> _Mismatch | None:
            mismatch = outer(value)
            if mismatch is not None:
                return mismatch
            for i, item in enumerate(typing.cast(collections.abc.Iterable[object], value)):
                mismatch = element(item)
                if mismatch is not None:
                    mismatch.path.append(f"[{i}]")
                    return mismatch
            return None

        return check_items

    def _fixed_tuple(self, args: tuple[Any, ...], tvars: dict[object, object], expected: str) -> _Checker:
        members = () if args == ((),) else args  # tuple[()] is the empty tuple
        checkers = [self.compile(a, tvars) for a in members]

        def check_tuple(value: object) -> _Mismatch | None:
            if not isinstance(value, tuple):
                return _got(value, expected)
            if len(value) != len(checkers):
                return _Mismatch(f"got a tuple of {len(value)} items, expected {expected}")
            for i, (item, checker) in enumerate(zip(value, checkers, strict=True)):
                mismatch = checker(item) if checker is not None else None
                if mismatch is not None:
                    mismatch.path.append(f"[{i}]")
                    return mismatch
            return None

        return check_tuple

    def _mapping(self, origin: type, args: tuple[Any, ...], tvars: dict[object, object], expected: str) -> _Checker:
        outer = _class_checker(origin, expected)
        key_checker = self.compile(args[0], tvars)
        value_checker = self.compile(args[1], tvars)
        if key_checker is None and value_checker is None:
            return outer

        def check_mapping(value: object) -> _Mismatch | None:
            mismatch = outer(value)
            if mismatch is not None:
                return mismatch
            items = typing.cast(collections.abc.Mapping[object, object], value).items()
            for i, (k, v) in enumerate(items):
                if key_checker is not None and (mismatch := key_checker(k)) is not None:
                    mismatch.path.append(f"{{key #{i}}}")
                    return mismatch
                if value_checker is not None and (mismatch := value_checker(v)) is not None:
                    mismatch.path.append(f"{{value #{i}}}")
                    return mismatch
            return None

        return check_mapping


def _none_checker(value: object) -> _Mismatch | None:
    return None if value is None else _got(value, "None")


def _class_checker(cls: type, expected: str | None = None) -> _Checker:
    name = expected or _describe(cls)
    if cls is bool:
        return lambda v: None if v.__class__ is bool else _got(v, name)
    if cls is int:
        return lambda v: None if isinstance(v, int) and v.__class__ is not bool else _got(v, name)
    if cls is float:
        return lambda v: None if isinstance(v, (float, int)) and v.__class__ is not bool else _got(v, name)
    if cls is date:
        return lambda v: None if isinstance(v, date) and not isinstance(v, datetime) else _got(v, name)
    try:
        isinstance(None, cls)
    except TypeError:  # a non-runtime Protocol and the like: nothing to check at run time
        return lambda v: None
    return lambda v: None if isinstance(v, cls) else _got(v, name)


def _literal_checker(args: tuple[Any, ...], expected: str) -> _Checker:
    # Type and value both: Literal[1] must refuse True (True == 1), and an enum member compares by identity.
    allowed = [(type(a), a) for a in args]

    def check_literal(value: object) -> _Mismatch | None:
        for kind, member in allowed:
            if value.__class__ is kind and (value is member or (not isinstance(value, enum.Enum) and value == member)):
                return None
        return _got(value, expected)

    return check_literal
