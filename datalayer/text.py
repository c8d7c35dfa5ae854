"""The one text rule, and the identity key of an e-mail address.

PostgreSQL's ``text`` holds UTF-8 without NUL. A Python ``str`` can hold both what UTF-8 cannot
encode (a lone surrogate, which is what ``os.fsdecode(b"\\xff")`` returns) and NUL, and psycopg
finds out only while sending the statement, as a ``UnicodeEncodeError`` or a ``DataError``. Every
text that goes to the database is checked here first:

* ``check_text`` refuses it with a ``ValidationError`` naming the field (input from callers);
* ``clean_text`` replaces what cannot be stored (text that must be written anyway, such as log
  records).

>>> check_text("ann", "username")
'ann'
>>> clean_text("caf\\udce9 \\x00")
'caf\\\\udce9 \\\\x00'
>>> email_key("  Ann@Example.COM. ")
'ann@example.com'
"""

from __future__ import annotations

import re
import unicodedata

import idna

from datalayer.errors import ValidationError

__all__ = [
    "MAX_EMAIL_CHARS",
    "check_text",
    "clean_text",
    "email_key",
    "nested_text_problem",
    "text_problem",
]

MAX_EMAIL_CHARS = 254
# The address as typed: one '@', no whitespace, a dot in the domain (the users_email_format CHECK
# in migrations/0001 is the looser server-side net under it).
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1, unchanged in 16.0): what a
# renderer shows as nothing. Python's unicodedata has no such property; most are category C*, but not
# the fillers, variation selectors and combining ones (U+034F, U+115F, U+3164, U+FE00, U+E0100 ...).
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_BRAILLE_BLANK = "\u2800"  # a blank that is neither whitespace nor ignorable
# RFC 5322 dot-atom-text, with RFC 6531's non-ASCII characters counted as atext.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]|[^\x00-\x7f]"
_DOT_ATOM_RE = re.compile(rf"(?:{_ATEXT})+(?:\.(?:{_ATEXT})+)*")
_LOCAL_RULE = (
    "the part before '@' may hold only letters, digits, non-ASCII characters, !#$%&'*+-/=?^_`{|}~ "
    "and single dots between them"
)
_NUL = "must not contain NUL characters (PostgreSQL cannot store them)"
_SURROGATE = (
    "must be valid unicode text: it holds a lone surrogate (e.g. undecodable bytes from os.fsdecode); "
    "decode the bytes with an explicit encoding or errors='replace'"
)


def text_problem(value: object) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text (a lower-case message), or None if it can."""
    if not isinstance(value, str):
        return "must be a string"
    if "\x00" in value:
        return _NUL
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE
    return None


def nested_text_problem(value: object) -> str | None:
    """``text_problem`` of the first unstorable str inside ``value`` (list, tuple and dict keys and values)."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, list | tuple):
        return next((p for v in value if (p := nested_text_problem(v)) is not None), None)
    if isinstance(value, dict):
        return next(
            (p for k, v in value.items() if (p := nested_text_problem(k) or nested_text_problem(v)) is not None), None
        )
    return None


def check_text(value: object, field: str, *, min_chars: int = 0, max_chars: int | None = None) -> str:
    """``value`` if it is a str PostgreSQL can store, ``min_chars`` to ``max_chars`` long.

    Raises ValidationError({field: message}) for a non-str, a lone surrogate, NUL or a bad length.
    """
    if (problem := text_problem(value)) is not None:
        raise ValidationError({field: problem})
    text = str(value)
    if len(text) < min_chars or (max_chars is not None and len(text) > max_chars):
        if max_chars is None:
            raise ValidationError({field: f"must be at least {min_chars} characters long"})
        raise ValidationError({field: f"must be {min_chars} to {max_chars} characters long"})
    return text


def clean_text(value: str) -> str:
    """``value`` with what PostgreSQL text cannot hold written out instead.

    A lone surrogate becomes its escape (``\\udcff``), NUL becomes ``\\x00``: the text stays
    readable and says what was there. Text that is already storable is returned as it is.
    """
    if "\x00" not in value and (value.isascii() or text_problem(value) is None):
        return value
    return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _ignorable(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _DEFAULT_IGNORABLE)


def _invisible(text: str) -> str | None:
    for ch in text:
        # C*: control, format (zero-width, soft hyphen, bidi marks), private use, unassigned: nothing a
        # reader can see or a mail server agrees on; unassigned code points would also let the key move
        # with the Unicode version. Default ignorables and the braille blank show as nothing too:
        # "an\u3164n" would be another account that reads "ann".
        if unicodedata.category(ch).startswith("C") or _ignorable(ord(ch)) or ch == _BRAILLE_BLANK:
            return f"U+{ord(ch):04X}"
    return None


def _local_problem(local: str) -> str | None:
    """Why ``local`` is not RFC 5322 dot-atom text (a quoted string or a comment names another
    spelling of a mailbox a plain local part already names), or None."""
    if _DOT_ATOM_RE.fullmatch(local):
        return None
    if local.startswith('"') or local.endswith('"'):
        return f"must not quote the part before '@'; {_LOCAL_RULE}"
    if "(" in local or ")" in local:
        return f"must not hold comments (parentheses); {_LOCAL_RULE}"
    return _LOCAL_RULE


def email_key(address: object) -> str:
    """The identity of an e-mail address: equal keys are the same mailbox for datalayer.

    The domain goes through IDNA 2008 with UTS #46 mapping (the ``idna`` package: ``Example.COM``,
    fullwidth letters and the A-label ``xn--strae-oqa.de`` all give ``straße.de``'s key, and
    ``straße.de`` stays distinct from ``strasse.de``) with a trailing dot dropped; the local part is
    NFKC-normalised and lower-cased (``str.lower``, not casefold: ``ß`` stays ``ß``). Control
    characters, Unicode default ignorables (zero-width, soft hyphen, variation selectors, Hangul
    fillers, ...) and blanks are refused, not dropped, and so is a local part that is not dot-atom
    text (quotes, comments, ``"ann"`` being another spelling of ``ann``), before or after NFKC. The key is
    computed in Python only: PostgreSQL's ``lower()`` follows the collation and disagrees outside
    ASCII. Raises ValidationError({"email": message}).
    """
    if (problem := text_problem(address)) is not None:
        raise ValidationError({"email": problem})
    typed = str(address).strip()
    if len(typed) > MAX_EMAIL_CHARS:
        raise ValidationError({"email": f"must be at most {MAX_EMAIL_CHARS} characters long"})
    if (bad := _invisible(typed)) is not None:
        raise ValidationError({"email": f"must not contain invisible or control characters ({bad})"})
    if not _EMAIL_RE.fullmatch(typed):
        raise ValidationError({"email": "is not a valid e-mail address (name@domain.tld)"})
    local, domain = typed.rsplit("@", 1)
    if (problem := _local_problem(local)) is not None:
        raise ValidationError({"email": problem})
    # NFKC again after lower(): lower() may leave a combining sequence (İ -> i + U+0307) that a
    # second pass must not change, so that email_key(email_key(a)) == email_key(a).
    local_key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", local).lower())
    if _invisible(local_key) or any(ch.isspace() for ch in local_key) or _local_problem(local_key):
        problem = f"the part before '@' normalises (NFKC) to characters it may not hold; {_LOCAL_RULE}"
        raise ValidationError({"email": problem})
    domain = domain[:-1] if domain.endswith(".") else domain
    try:
        domain_key = idna.decode(idna.encode(domain, uts46=True))
    except (idna.IDNAError, UnicodeError) as e:
        raise ValidationError({"email": f"has an invalid domain {domain[:100]!r}: {str(e)[:100].lower()}"}) from None
    if not domain_key or domain_key.endswith("."):
        raise ValidationError({"email": f"has an invalid domain {domain[:100]!r}: empty label"})
    key = f"{local_key}@{domain_key}"
    if len(key) > MAX_EMAIL_CHARS:
        raise ValidationError({"email": f"must be at most {MAX_EMAIL_CHARS} characters long once normalised"})
    return key
