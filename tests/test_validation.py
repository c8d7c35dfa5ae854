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
    # the address is kept as typed (trimmed): it is where mail goes; its identity key is the repository's
    assert r == {"valid": True, "data": {"username": "ann.o_k-1", "email": "Ann@Example.COM", "password": "s3cret-pass",
                                         "is_active": True}, "errors": {}}


@pytest.mark.parametrize(("data", "field"), [
    ({"username": "ab", "email": "a@b.co"}, "username"),
    ({"username": "okname", "email": "a@b.co"}, "password"),
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
    assert ok["valid"] and ok["data"] == {"user_id": 3, "name": "q3", "analysis_type": "cohort", "parameters": {"w": 7}}
    # a new analysis is always pending: status moves go through start/complete/fail, not create
    bad = validate_analysis_data({"user_id": True, "name": "", "analysis_type": "t", "status": "pending",
                                  "parameters": {"x": object()}})
    assert set(bad["errors"]) == {"user_id", "name", "status", "parameters"}
    assert bad["errors"]["status"] == "unknown field"


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


# --- item 16: one rule set; a validator's data goes straight into the matching create ------------------

def test_analysis_data_goes_straight_into_create(db: Any) -> None:
    from datalayer import data_analysis_repo, user_repo

    owner = user_repo.create(db, username="owner", email="owner@example.com", hashed_password="h")
    r = validate_analysis_data({"user_id": owner.id, "name": " churn ", "analysis_type": "cohort",
                                "parameters": {"window": 30}})
    assert r["valid"]
    a = data_analysis_repo.create(db, **r["data"])
    assert (a.name, a.analysis_type, a.parameters, a.status) == ("churn", "cohort", {"window": 30}, "pending")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_analysis_refuses_what_create_refuses(number: float) -> None:
    r = validate_analysis_data({"user_id": 1, "name": "n", "analysis_type": "t", "parameters": {"x": [number]}})
    assert not r["valid"] and "NaN" in r["errors"]["parameters"]


def test_user_data_goes_straight_into_create_with_password(db: Any) -> None:
    from datalayer import user_repo, verify_password

    r = validate_user_data({"username": "ann", "email": " Ann@Example.com ", "password": "s3cret-pass",
                            "is_active": False})
    assert r["valid"]
    u = user_repo.create_with_password(db, **r["data"])
    assert (u.username, u.email, u.is_active) == ("ann", "Ann@Example.com", False)
    assert verify_password("s3cret-pass", u.hashed_password)


@pytest.mark.parametrize("password", ["x", "1234567", "\udcff" * 9, "a\x00" * 5])
def test_password_policy_is_one_rule(db: Any, password: str) -> None:
    from datalayer import ValidationError, hash_password, user_repo

    r = validate_user_data({"username": "ann", "email": "a@example.com", "password": password})
    assert not r["valid"]
    for call in (lambda: user_repo.create_with_password(db, username="ann", email="a@example.com", password=password),
                 lambda: hash_password(password)):
        with pytest.raises(ValidationError) as e:
            call()
        assert e.value.errors == {"password": r["errors"]["password"]}
    assert user_repo.count(db) == 0


_local = st.one_of(st.text(min_size=1, max_size=20),
                   st.sampled_from(["ann", "Ann", "İx", "ß", "ren\u00e9", "rene\u0301", "\uff41\uff4e\uff4e", "a\u200bb", "a.b+c",
                                    "\udcff", "x\x00", "o'brien", "a b"]))
_domain = st.one_of(st.text(min_size=1, max_size=20),
                    st.sampled_from(["example.com", "Example.COM.", "straße.de", "xn--strae-oqa.de", "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com",
                                     "例え.jp", "exa_mple.com", "a..b", "-x.com", "localhost", "x.y"]))
_username = st.one_of(st.from_regex(r"[A-Za-z0-9_.\-]{3,50}", fullmatch=True), st.text(max_size=60),
                      st.sampled_from(["  padded  ", "\udcffabc"]))
_password = st.one_of(st.text(max_size=30), st.text(min_size=8, max_size=40), st.just("\udcff" * 8))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=20)
    | st.just("\udcff") | st.just("\x00"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(username=_username, local=_local, domain=_domain, password=_password, is_active=st.booleans())
def test_whatever_validate_user_data_accepts_create_with_password_stores(
        dl_module_pool: Any, username: str, local: str, domain: str, password: str, is_active: bool) -> None:
    from datalayer import DataLayerError, user_repo, verify_password
    from datalayer.pool import connection

    data = {"username": username, "email": f"{local}@{domain}", "password": password, "is_active": is_active}
    r = validate_user_data(data)
    with connection(dl_module_pool) as db:
        if not r["valid"]:
            with pytest.raises(DataLayerError):  # the repository refuses it too
                user_repo.create_with_password(db, **data)
            assert user_repo.count(db) == 0
            return
        u = user_repo.create_with_password(db, **r["data"])
        try:
            assert (u.username, u.email, u.is_active) == (r["data"]["username"], r["data"]["email"], is_active)
            assert verify_password(r["data"]["password"], u.hashed_password)
            assert user_repo.get_by_email(db, r["data"]["email"]) == u == user_repo.get_by_id(db, u.id)
        finally:
            user_repo.delete(db, u.id)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(name=st.one_of(st.text(max_size=210), st.just(" \udcff ")), analysis_type=st.text(max_size=110),
       parameters=st.one_of(st.dictionaries(st.text(max_size=8), _json, max_size=4), _json))
def test_whatever_validate_analysis_data_accepts_create_stores(
        dl_module_pool: Any, name: str, analysis_type: str, parameters: Any) -> None:
    from datalayer import DataLayerError, data_analysis_repo, user_repo
    from datalayer.pool import connection

    with connection(dl_module_pool) as db:
        owner = user_repo.get_by_username(db, "prop_owner") or user_repo.create(
            db, username="prop_owner", email="prop@example.com", hashed_password="h")
        data = {"user_id": owner.id, "name": name, "analysis_type": analysis_type, "parameters": parameters}
        r = validate_analysis_data(data)
        if not r["valid"]:
            with pytest.raises(DataLayerError):  # the repository refuses it too
                data_analysis_repo.create(db, **{**data, "analysis_type": analysis_type.strip()})
            return
        a = data_analysis_repo.create(db, **r["data"])
        try:
            assert (a.user_id, a.name, a.analysis_type, a.parameters) == (
                owner.id, r["data"]["name"], r["data"]["analysis_type"], r["data"]["parameters"])
            assert a.status == "pending" and data_analysis_repo.get_by_id(db, a.id) == a
        finally:
            data_analysis_repo.delete(db, a.id)
