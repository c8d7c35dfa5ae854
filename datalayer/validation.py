"""Input validation: ``validate_user_data`` and ``validate_analysis_data``.

Input is structured by cattrs into frozen attrs input records (strict types, unknown keys refused),
trimmed by the records' converters, then checked field by field with the very functions the
repositories run (``datalayer.repos._common``, ``datalayer.passwords``, ``datalayer.text``): what a
validator accepts, the matching repository stores, and its ``data`` goes straight in:
``user_repo.create_with_password(db, **data)``, ``data_analysis_repo.create(db, **data)``. The
helpers never raise, whatever they are given.

>>> r = validate_user_data({"username": " ann ", "email": "Ann@Example.com", "password": "s3cret-pass"})
>>> r["valid"], r["data"]["username"], r["data"]["email"]
(True, 'ann', 'Ann@Example.com')
>>> sorted(validate_user_data({"username": "a", "extra": 1})["errors"].items())[1:3]
[('extra', 'unknown field'), ('password', 'required')]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict, TypeVar, cast

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from datalayer.builtin_schema import STATUSES
from datalayer.convert import make_converter
from datalayer.errors import ValidationError
from datalayer.passwords import check_password
from datalayer.repos import _common
from datalayer.text import email_key

__all__ = [
    "ANALYSIS_STATUSES",
    "MAX_JSON_BYTES",
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

ANALYSIS_STATUSES = STATUSES
MAX_JSON_BYTES = _common.MAX_JSON_BYTES


class ValidationResult(TypedDict):
    valid: bool
    data: dict[str, Any]
    errors: dict[str, str]


def _by(check: Callable[[Any], object]) -> Rule:
    """A validator rule out of a repository check: its message, or None when it accepts the value."""

    def rule(v: Any) -> str | None:
        try:
            check(v)
        except ValidationError as e:
            return next(iter(e.errors.values()), str(e))
        return None

    return rule


def _strip(v: str) -> str:
    return v.strip()


def _empty_if_none(v: dict[str, Any] | None) -> dict[str, Any]:
    return {} if v is None else v


def _rules(*rules: Rule) -> dict[str, tuple[Rule, ...]]:
    return {"rules": rules}


def check_username(username: str) -> None:
    """Raise ValidationError unless ``username`` is acceptable as stored."""
    _common.check_username(username)


def check_email(email: str) -> None:
    """Raise ValidationError unless ``email`` is an acceptable address (see ``datalayer.text.email_key``)."""
    email_key(email)


@attrs.frozen(kw_only=True)
class UserInput:
    """What a client may send to create a user (``user_repo.create_with_password``)."""

    username: str = attrs.field(converter=_strip, metadata=_rules(_by(_common.check_username)))
    # Kept as typed (trimmed): the address mail goes to. Its identity key is computed by the repository.
    email: str = attrs.field(converter=_strip, metadata=_rules(_by(email_key)))
    password: str = attrs.field(metadata=_rules(_by(check_password)))
    is_active: bool = True


@attrs.frozen(kw_only=True)
class AnalysisInput:
    """What a client may send to request an analysis (``data_analysis_repo.create``); it starts pending."""

    user_id: int = attrs.field(metadata=_rules(_by(lambda v: _common.check_id(v, "user_id"))))
    name: str = attrs.field(converter=_strip, metadata=_rules(_by(_common.check_analysis_name)))
    analysis_type: str = attrs.field(
        converter=_strip, metadata=_rules(_by(lambda v: _common.check_type(v, "analysis_type")))
    )
    # null means {} here as in create (parameters=None)
    parameters: dict[str, Any] | None = attrs.field(
        factory=dict, converter=_empty_if_none, metadata=_rules(_by(lambda v: _common.json_text(v, "parameters")))
    )


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
    dict[str, Any] | None: "an object with string keys",
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

    Fields: username (3-50 of letters, digits, _ . -), email (trimmed, kept as typed; checked with
    ``datalayer.text.email_key``), password (8-1024 characters), is_active (optional bool, default
    true). Unknown fields are errors. ``data`` goes straight into ``user_repo.create_with_password``.
    """
    return _validate(data, UserInput)


def validate_analysis_data(data: object) -> ValidationResult:
    """Validate and normalise an analysis request: ``{"valid", "data", "errors"}``; never raises.

    Fields: user_id, name (1-200), analysis_type (1-100), parameters (JSON object, at most 1 MB;
    no NaN, infinity or NUL). A new analysis is always pending (status moves go through
    ``start``/``complete``/``fail``), so ``status`` is an unknown field. ``data`` goes straight
    into ``data_analysis_repo.create``.
    """
    return _validate(data, AnalysisInput)
