"""Input validation: ``validate_user_data`` and ``validate_analysis_data``.

Input is structured by cattrs into frozen attrs input records (strict types, unknown keys refused),
normalised by the records' converters (trimmed, e-mail lower-cased), then checked field by field
against the rules in each field's metadata. The helpers never raise, whatever they are given.

>>> r = validate_user_data({"username": " ann ", "email": "Ann@Example.com", "password": "s3cret-pass"})
>>> r["valid"], r["data"]["username"], r["data"]["email"]
(True, 'ann', 'ann@example.com')
>>> validate_user_data({"username": "a", "extra": 1})["errors"]
{'extra': 'unknown field', 'email': 'required'}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypedDict, TypeVar, cast

import attrs
import cattrs
import orjson
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from datalayer.convert import make_converter
from datalayer.errors import ValidationError

__all__ = [
    "ANALYSIS_STATUSES",
    "AnalysisInput",
    "UserInput",
    "ValidationResult",
    "check_email",
    "check_username",
    "structure_input",
    "validate_analysis_data",
    "validate_user_data",
]

T = TypeVar("T")
Rule = Callable[[Any], str | None]

ANALYSIS_STATUSES = ("pending", "running", "completed", "failed")
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,50}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_JSON_BYTES = 1_000_000


class ValidationResult(TypedDict):
    valid: bool
    data: dict[str, Any]
    errors: dict[str, str]


def _no_nul(v: Any) -> str | None:
    return "must not contain NUL characters" if isinstance(v, str) and "\x00" in v else None


def _length(lo: int, hi: int) -> Rule:
    def rule(v: Any) -> str | None:
        if isinstance(v, str) and not lo <= len(v) <= hi:
            return f"must be {lo} to {hi} characters long" if lo else f"must be at most {hi} characters long"
        return None

    return rule


def _username(v: object) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if not USERNAME_RE.fullmatch(v):
        return "must be 3 to 50 letters, digits, '_', '.' or '-'"
    return None


def _email(v: object) -> str | None:
    if not isinstance(v, str):
        return "must be a string"
    if len(v) > 254:
        return "must be at most 254 characters long"
    if not EMAIL_RE.fullmatch(v):
        return "is not a valid e-mail address"
    return None


def _json_object(v: Any) -> str | None:
    try:
        encoded = orjson.dumps(v)
    except (TypeError, orjson.JSONEncodeError):
        return "must be JSON-serialisable (strings, numbers, booleans, lists, objects)"
    if len(encoded) > MAX_JSON_BYTES:
        return f"must be at most {MAX_JSON_BYTES:,} bytes as JSON"
    if b"\\u0000" in encoded:
        return "must not contain NUL characters"
    return None


def _one_of(values: tuple[str, ...]) -> Rule:
    def rule(v: Any) -> str | None:
        return None if v in values else f"must be one of {', '.join(values)}"

    return rule


def _strip(v: str) -> str:
    return v.strip()


def _email_norm(v: str) -> str:
    return v.strip().lower()


def _rules(*rules: Rule) -> dict[str, tuple[Rule, ...]]:
    return {"rules": rules}


def check_username(username: str) -> None:
    """Raise ValidationError unless ``username`` is acceptable as stored."""
    _raise_on({"username": (username, (_no_nul, _username))})


def check_email(email: str) -> None:
    """Raise ValidationError unless ``email`` is acceptable as stored."""
    _raise_on({"email": (email, (_no_nul, _email))})


def _raise_on(fields: Mapping[str, tuple[Any, tuple[Rule, ...]]]) -> None:
    errors = {}
    for name, (value, rules) in fields.items():
        for rule in rules:
            if (msg := rule(value)) is not None:
                errors[name] = msg
                break
    if errors:
        raise ValidationError(errors)


@attrs.frozen(kw_only=True)
class UserInput:
    """What a client may send to create a user."""

    username: str = attrs.field(converter=_strip, metadata=_rules(_no_nul, _username))
    email: str = attrs.field(converter=_email_norm, metadata=_rules(_no_nul, _email))
    password: str | None = attrs.field(default=None, metadata=_rules(_no_nul, _length(8, 1024)))
    is_active: bool = True


@attrs.frozen(kw_only=True)
class AnalysisInput:
    """What a client may send to request an analysis."""

    user_id: int = attrs.field(metadata=_rules(lambda v: None if 0 < v < 2**63 else "must be a positive id"))
    name: str = attrs.field(converter=_strip, metadata=_rules(_no_nul, _length(1, 200)))
    analysis_type: str = attrs.field(converter=_strip, metadata=_rules(_no_nul, _length(1, 100)))
    parameters: dict[str, Any] = attrs.field(factory=dict, metadata=_rules(_json_object))
    status: str = attrs.field(default="pending", metadata=_rules(_one_of(ANALYSIS_STATUSES)))


def _strict(tp: type[Any]) -> Callable[[Any, type[Any]], Any]:
    def hook(value: Any, _: type[Any]) -> Any:
        # cattrs' defaults coerce (str(5) -> "5", bool("no") -> True): input validation must not.
        if isinstance(value, bool) and tp is not bool:
            raise TypeError(f"expected {tp.__name__}, got a boolean")
        if tp is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, tp):
            raise TypeError(f"expected {tp.__name__}, got {type(value).__name__}")
        return value

    return hook


def _make_input_converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True, detailed_validation=True)
    for tp in (str, int, float, bool):
        conv.register_structure_hook(tp, _strict(tp))
    conv.register_structure_hook_func(
        lambda t: t == dict[str, Any],
        lambda v, _: (
            dict(v)
            if isinstance(v, dict) and all(isinstance(k, str) for k in v)
            else _raise_type("an object with string keys", v)
        ),
    )
    return conv


def _raise_type(expected: str, value: Any) -> Any:
    raise TypeError(f"expected {expected}, got {type(value).__name__}")


_input_converter = _make_input_converter()
_TYPE_NAMES: dict[Any, str] = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    float: "a number",
    dict[str, Any]: "an object with string keys",
}


def _type_errors(e: ClassValidationError, cls: type[Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    with_notes, without = e.group_exceptions()
    types = {f.name: f.type for f in attrs.fields(cls)}
    for exc, note in with_notes:
        name = getattr(note, "name", None) or str(note).rsplit(" ", 1)[-1]
        if isinstance(exc, KeyError):
            errors[name] = "required"
        else:
            expected = _TYPE_NAMES.get(types.get(name))
            errors[name] = f"must be {expected}" if expected else f"has the wrong type ({exc})"
    for exc in without:
        if isinstance(exc, ForbiddenExtraKeysError):
            for key in sorted(exc.extra_fields, key=str):
                errors[str(key)[:100]] = "unknown field"
        else:
            errors["_input"] = str(exc)
    return errors


def structure_input(data: object, cls: type[T]) -> tuple[T | None, dict[str, str]]:
    """Structure ``data`` into the input record ``cls``: (record or None, {field: message})."""
    if not isinstance(data, Mapping):
        return None, {"_input": f"expected an object (a dict of fields), got {type(data).__name__}"}
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        return None, {"_input": "field names must be strings"}
    try:
        record = _input_converter.structure(dict(data), cls)
    except ClassValidationError as e:
        errors = _type_errors(e, cls)
        # Report the value errors of the well-typed fields too, so a form shows every problem at once.
        for f in attrs.fields(cast(Any, cls)):
            if f.name in errors or f.name not in data:
                continue
            try:
                value = _input_converter.structure(data[f.name], f.type)
                value = f.converter(value) if callable(f.converter) else value
            except Exception:  # noqa: S112 - the type error is already reported for this field
                continue
            if (msg := _first_broken_rule(f, value)) is not None:
                errors[f.name] = msg
        return None, errors
    except (TypeError, ValueError, AttributeError) as e:
        # attrs converters may fail on exotic str subclasses; still an input error, not a crash
        return None, {"_input": f"could not read the input ({type(e).__name__})"}
    errors = {}
    for f in attrs.fields(cast(Any, cls)):
        if (msg := _first_broken_rule(f, getattr(record, f.name))) is not None:
            errors[f.name] = msg
    return record, errors


def _first_broken_rule(f: attrs.Attribute[Any], value: Any) -> str | None:
    for rule in f.metadata.get("rules", ()):
        if (msg := rule(value)) is not None:
            return str(msg)
    return None


def _validate(data: object, cls: type[Any]) -> ValidationResult:
    try:
        record, errors = structure_input(data, cls)
        clean: dict[str, Any] = {}
        if record is not None:
            clean = {k: v for k, v in attrs.asdict(record, recurse=False).items() if k not in errors}
        return {"valid": not errors, "data": clean, "errors": errors}
    except Exception as e:  # the contract: never raise, whatever the input
        return {"valid": False, "data": {}, "errors": {"_input": f"could not validate ({type(e).__name__})"}}


def validate_user_data(data: object) -> ValidationResult:
    """Validate and normalise user input: ``{"valid", "data", "errors"}``; never raises.

    Fields: username (3-50 of letters, digits, _ . -), email (lower-cased), password (8-1024
    characters, optional), is_active (optional bool). Unknown fields are errors.
    """
    return _validate(data, UserInput)


def validate_analysis_data(data: object) -> ValidationResult:
    """Validate and normalise an analysis request: ``{"valid", "data", "errors"}``; never raises.

    Fields: user_id, name (1-200), analysis_type (1-100), parameters (JSON object, at most 1 MB),
    status (pending, running, completed or failed; default pending).
    """
    return _validate(data, AnalysisInput)
