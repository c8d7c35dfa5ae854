"""datalayer.text: the one text rule (check_text, clean_text) and the e-mail identity key (email_key)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datalayer import ValidationError
from datalayer.text import check_text, clean_text, email_key, nested_text_problem, text_problem

SURROGATE = os.fsdecode(b"\xff")


@pytest.mark.parametrize(("value", "word"), [(SURROGATE, "surrogate"), ("a\x00b", "NUL"), (b"bytes", "string"),
                                             (None, "string"), (5, "string")])
def test_check_text_refuses_with_the_field(value: object, word: str) -> None:
    with pytest.raises(ValidationError) as e:
        check_text(value, "title")
    assert list(e.value.errors) == ["title"] and word in e.value.errors["title"]


def test_check_text_lengths() -> None:
    assert check_text("", "t") == "" and check_text("ünï 🚀", "t", min_chars=1, max_chars=5) == "ünï 🚀"
    with pytest.raises(ValidationError, match="1 to 3 characters"):
        check_text("abcd", "t", min_chars=1, max_chars=3)


def test_nested_problems_are_found() -> None:
    assert nested_text_problem({"k": [1, {"x": ("ok", SURROGATE)}]}) is not None
    assert nested_text_problem({SURROGATE: 1}) is not None
    assert nested_text_problem({"k": [1, 2.5, None, "fine"]}) is None


def test_clean_text_keeps_what_was_there_readably() -> None:
    assert clean_text("caf" + SURROGATE + "\x00!") == "caf\\udcff\\x00!"
    assert clean_text("plain ünï") == "plain ünï"


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_clean_text_is_always_storable_and_a_no_op_on_good_text(value: str) -> None:
    cleaned = clean_text(value)
    assert text_problem(cleaned) is None
    cleaned.encode("utf-8")
    if text_problem(value) is None:
        assert cleaned is value or cleaned == value


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_text_problem_agrees_with_what_postgresql_can_take(value: str) -> None:
    try:
        value.encode("utf-8")
        storable = "\x00" not in value
    except UnicodeEncodeError:
        storable = False
    assert (text_problem(value) is None) is storable


# --- email_key ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("a", "b"), [
    ("Ann@Example.com", "ann@example.com"),
    ("ren\u00e9@example.com", "rene\u0301@example.com"),          # NFC vs NFD
    ("\uff41\uff4e\uff4e@example.com", "ann@example.com"),                      # fullwidth local part
    ("ann@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "ann@example.com"),                   # fullwidth domain
    ("ann@example.com.", "ann@example.com"),                       # trailing dot
    ("  ann@example.com ", "ann@example.com"),                     # surrounding whitespace
    ("x@straße.de", "x@xn--strae-oqa.de"),                         # U-label and A-label
    ("ß@x.com", "ß@X.COM"),
])
def test_same_mailbox_same_key(a: str, b: str) -> None:
    assert email_key(a) == email_key(b)


@pytest.mark.parametrize(("a", "b"), [
    ("İx@example.com", "ix@example.com"),      # Python lower('İ') is 'i̇', not 'i'; PostgreSQL's lower() differs
    ("x@straße.de", "x@strasse.de"),           # IDNA 2008: a different domain (IDNA 2003 mapped ß to ss)
    ("straße@x.com", "strasse@x.com"),         # lower(), not casefold()
])
def test_distinct_mailboxes_distinct_keys(a: str, b: str) -> None:
    assert email_key(a) != email_key(b)


def test_key_values() -> None:
    assert email_key("İx@Example.COM") == "i\u0307x@example.com"
    assert email_key("A@xn--strae-oqa.DE.") == "a@straße.de"


@pytest.mark.parametrize(("address", "word"), [
    ("an\u200bn@example.com", "invisible"), ("an\u00adn@example.com", "invisible"),
    ("ann@exa\u200dmple.com", "invisible"), ("\ufeffann@example.com", "invisible"),
    ("a\x01b@example.com", "invisible"), ("a\ue000@example.com", "invisible"),
    ("ann\uff20example.com", "valid e-mail"), ("a\uff20b@example.com", "normalises"),
    ("ann@example", "valid e-mail"), ("a@b@c.com", "valid e-mail"), ("a b@example.com", "valid e-mail"),
    ("ann@exa_mple.com", "invalid domain"), ("ann@a..com", "invalid domain"), ("ann@example.com..", "invalid domain"),
    ("x" * 250 + "@example.com", "at most 254"), (SURROGATE + "@example.com", "surrogate"),
    ("a\x00@example.com", "NUL"), (None, "string"),
    # default ignorables outside category C*, and blanks
    ("an\u034fn@example.com", "invisible"), ("an\ufe00n@example.com", "invisible"),
    ("ann\ufe0f@example.com", "invisible"), ("an\U000e0100n@example.com", "invisible"),
    ("an\U000e01efn@example.com", "invisible"), ("an\u115fn@example.com", "invisible"),
    ("an\u1160n@example.com", "invisible"), ("an\u3164n@example.com", "invisible"),
    ("an\uffa0n@example.com", "invisible"), ("an\u17b4n@example.com", "invisible"),
    ("an\u17b5n@example.com", "invisible"), ("an\u180bn@example.com", "invisible"),
    ("an\u180fn@example.com", "invisible"), ("an\u2800n@example.com", "invisible"),
    ("a\u02dcb@example.com", "normalises"), ("a\u00a8b@example.com", "normalises"),  # NFKC: a space and a mark
    # RFC 5322 forms naming ann's mailbox, and what dot-atom text cannot hold
    ('"ann"@example.com', "quote"), ('""@example.com', "quote"), ('"a b"@example.com', "valid e-mail"),
    ("(c)ann@example.com", "comments"), ("a(comment)@example.com", "comments"), ("ann()@example.com", "comments"),
    (".ann@example.com", "single dots"), ("ann.@example.com", "single dots"), ("a..nn@example.com", "single dots"),
    ("a,b@example.com", "single dots"), ("a\\b@example.com", "single dots"), ("a[b]@example.com", "single dots"),
    ("a\uff0e\uff0eb@example.com", "normalises"), ("a\uff02b\uff02@example.com", "normalises"),
])
def test_refused_addresses(address: object, word: str) -> None:
    with pytest.raises(ValidationError) as e:
        email_key(address)
    assert list(e.value.errors) == ["email"] and word in e.value.errors["email"]


_addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["İx", "ß", "\uff21\uff2e\uff2e", "rene\u0301", "Ǆ", "ﬁ"])),
    st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["Example.COM.", "straße.de", "例え.jp", "\uff25\uff38.com"])),
)


@given(_addresses)
def test_key_is_stable(address: str) -> None:
    try:
        key = email_key(address)
    except ValidationError:
        return
    assert email_key(key) == key  # a key is its own key: stored keys never drift
    assert text_problem(key) is None and key.count("@") == 1 and len(key) <= 254


def test_every_default_ignorable_range_is_refused() -> None:
    # Both ends of each DerivedCoreProperties range, whatever its general category.
    from datalayer.text import _DEFAULT_IGNORABLE

    for lo, hi in _DEFAULT_IGNORABLE:
        for cp in (lo, hi):
            with pytest.raises(ValidationError, match="invisible"):
                email_key(f"an{chr(cp)}n@example.com")


@pytest.mark.parametrize("address", ["ann+tag@example.com", "o'brien@example.com", "a.b.c@example.com",
                                     "!#$%&'*+-/=?^_`{|}~@example.com", "jos\u00e9@example.com", "用户@例え.jp"])
def test_dot_atom_addresses_are_accepted(address: str) -> None:
    assert email_key(address) == email_key(email_key(address))
