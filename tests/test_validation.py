"""validate_user_data / validate_analysis_data: normalise, reject, never raise (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datalayer import validate_analysis_data, validate_user_data

INJECTIONS = ["'; DROP TABLE users; --", "\" OR 1=1 --", "$$; SELECT pg_sleep(10); $$", "\\x00", "%(x)s", ":user_id"]


def test_user_ok_and_normalised() -> None:
    r = validate_user_data({"username": " ann.o_k-1 ", "email": " Ann@Example.COM ", "password": "s3cret-pass"})
    assert r == {"valid": True, "data": {"username": "ann.o_k-1", "email": "ann@example.com", "password": "s3cret-pass",
                                         "is_active": True}, "errors": {}}


@pytest.mark.parametrize(("data", "field"), [
    ({"username": "ab", "email": "a@b.co"}, "username"),
    ({"username": "a b c", "email": "a@b.co"}, "username"),
    ({"username": "x" * 51, "email": "a@b.co"}, "username"),
    ({"username": "nul\x00", "email": "a@b.co"}, "username"),
    ({"username": "okname", "email": "nope"}, "email"),
    ({"username": "okname", "email": "a@b"}, "email"),
    ({"username": "okname", "email": "a" * 250 + "@b.co"}, "email"),
    ({"username": "okname", "email": "a@b.co", "password": "short"}, "password"),
    ({"username": "okname", "email": "a@b.co", "is_active": "yes"}, "is_active"),
    ({"username": "okname", "email": "a@b.co", "admin": True}, "admin"),
    ({"username": 5, "email": "a@b.co"}, "username"),
    ({"email": "a@b.co"}, "username"),
])
def test_user_errors(data: dict[str, Any], field: str) -> None:
    r = validate_user_data(data)
    assert r["valid"] is False and field in r["errors"]


def test_analysis() -> None:
    ok = validate_analysis_data({"user_id": 3, "name": " q3 ", "analysis_type": "cohort", "parameters": {"w": 7}})
    assert ok["valid"] and ok["data"]["name"] == "q3" and ok["data"]["status"] == "pending"
    bad = validate_analysis_data({"user_id": True, "name": "", "analysis_type": "t", "status": "done",
                                  "parameters": {"x": object()}})
    assert set(bad["errors"]) == {"user_id", "name", "status", "parameters"}


@pytest.mark.parametrize("data", [None, [], "string", 42, b"bytes", {1: "x"}, {"username": INJECTIONS[0]}])
def test_non_dicts_and_junk(data: Any) -> None:
    for fn in (validate_user_data, validate_analysis_data):
        r = fn(data)
        assert r["valid"] is False and r["errors"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
anything = st.one_of(json_values, st.binary(), st.tuples(st.integers()), st.sampled_from(INJECTIONS),
                     st.builds(object), st.text(alphabet=st.characters(codec="utf-8")))


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["username", "email", "password", "is_active", "extra", "id"]), anything)
       | anything)
def test_validate_user_never_raises(data: Any) -> None:
    r = validate_user_data(data)
    assert set(r) == {"valid", "data", "errors"}
    assert r["valid"] is (not r["errors"])
    if r["valid"]:
        again = validate_user_data(r["data"])
        assert again["valid"] and again["data"] == r["data"]  # sanitising is idempotent


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["user_id", "name", "analysis_type", "parameters", "status", "x"]), anything)
       | anything)
def test_validate_analysis_never_raises(data: Any) -> None:
    r = validate_analysis_data(data)
    assert set(r) == {"valid", "data", "errors"}
    assert r["valid"] is (not r["errors"])
