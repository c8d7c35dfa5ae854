"""Users: create, read, update, delete and list. Queries live in ``sql/users.sql``.

>>> with connection() as db:                                            # doctest: +SKIP
...     u = user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
...     user_repo.update(db, u.id, is_active=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from psycopg import Connection

from datalayer._pagination import check_limit, decode_cursor, keyset_page, offset_args, offset_page
from datalayer._run import Bound, bind
from datalayer._sql import load_queries
from datalayer.errors import ValidationError
from datalayer.records import OffsetPage, Page, User
from datalayer.repos._common import check_email, check_flag, check_id, check_ids, check_username, optional_flag
from datalayer.text import check_text, email_key

__all__ = [
    "UserChanges",
    "count",
    "create",
    "create_with_password",
    "delete",
    "find",
    "find_page",
    "get_by_email",
    "get_by_id",
    "get_by_username",
    "get_many",
    "update",
]

_q = load_queries("users")
_create = bind(_q, "create", User)
_get_by_id = bind(_q, "get_by_id", User)
_get_by_username = bind(_q, "get_by_username", User)
_get_by_email = bind(_q, "get_by_email", User)
_get_many = bind(_q, "get_many", User)
_update = bind(_q, "update", User)
_delete: Bound[None] = bind(_q, "delete", None)
_find = bind(_q, "find", User)
_find_page = bind(_q, "find_page", User)
_count = bind(_q, "count", int)

_LISTING = "users.id"


class UserChanges(TypedDict, total=False):
    """The columns ``update`` may change."""

    username: str
    email: str
    hashed_password: str
    is_active: bool


def _check_hash(hashed_password: object) -> str:
    hashed = check_text(hashed_password, "hashed_password")
    if not hashed:
        raise ValidationError({"hashed_password": "must be a non-empty password hash (see hash_password)"})
    return hashed


def _check_id(value: object, name: str = "user_id") -> int:
    return check_id(value, name)


def create(db: Connection[Any], *, username: str, email: str, hashed_password: str, is_active: bool = True) -> User:
    """Insert a user; IntegrityConflict (field username or email) when either is taken.

    The e-mail is stored as typed (trimmed) and is what ``User.email`` returns; its identity key
    (``datalayer.text.email_key``) is stored beside it, unique: ``Ann@Example.com`` and
    ``ann@example.com`` are one account.
    """
    username = check_username(username)
    address, key = check_email(email)
    return _create.one(
        db,
        username=username,
        email=address,
        email_key=key,
        hashed_password=_check_hash(hashed_password),
        is_active=check_flag(is_active, "is_active"),
    )


def create_with_password(
    db: Connection[Any], *, username: str, email: str, password: str, is_active: bool = True
) -> User:
    """Like ``create``, hashing ``password`` first (argon2); the plain password is never stored.

    Takes exactly what ``validate_user_data`` returns as ``data``; the password policy is the same.
    """
    from datalayer.passwords import check_password, hash_password

    username = check_username(username)
    check_email(email)
    check_password(password)  # before hashing: argon2 is slow, bad input should not pay for it
    check_flag(is_active, "is_active")
    return create(db, username=username, email=email, hashed_password=hash_password(password), is_active=is_active)


def get_by_id(db: Connection[Any], user_id: int) -> User | None:
    """One user by id, or None."""
    return _get_by_id.maybe(db, user_id=_check_id(user_id))


def get_by_username(db: Connection[Any], username: str) -> User | None:
    """One user by exact username, or None (ValidationError for text PostgreSQL cannot hold)."""
    return _get_by_username.maybe(db, username=check_text(username, "username"))


def get_by_email(db: Connection[Any], email: str) -> User | None:
    """The user whose address is the same mailbox as ``email`` (same ``email_key``), or None.

    ``ANN@example.com`` finds ``ann@Example.com``; an address that cannot be valid finds nobody.
    ValidationError for a non-str or text PostgreSQL cannot hold.
    """
    check_text(email, "email")
    try:
        key = email_key(email)
    except ValidationError:
        return None
    return _get_by_email.maybe(db, email_key=key)


def get_many(db: Connection[Any], ids: Sequence[int]) -> list[User]:
    """The users among ``ids``, in id order (missing ids are skipped; an empty list gives []).

    At most 10,000 ids; ValidationError for anything but a list of positive integer ids.
    """
    checked = check_ids(ids)
    if not checked:
        return []
    return _get_many.many(db, ids=checked)


def update(db: Connection[Any], user_id: int, **changes: Unpack[UserChanges]) -> User | None:
    """Change some columns; returns the updated user, or None when there is no such user.

    Unknown fields raise ValidationError (and are refused by mypy through ``UserChanges``).
    """
    unknown = set(changes) - set(UserChanges.__annotations__)
    if unknown:
        raise ValidationError({k: "is not a column update may change" for k in sorted(unknown)})
    params: dict[str, Any] = {
        "username": None,
        "email": None,
        "email_key": None,
        "hashed_password": None,
        "is_active": None,
    }
    if "username" in changes:
        params["username"] = check_username(changes["username"])
    if "email" in changes:
        params["email"], params["email_key"] = check_email(changes["email"])
    if "hashed_password" in changes:
        params["hashed_password"] = _check_hash(changes["hashed_password"])
    if "is_active" in changes:
        params["is_active"] = check_flag(changes["is_active"], "is_active")
    return _update.maybe(
        db,
        user_id=_check_id(user_id),
        username=params["username"],
        email=params["email"],
        email_key=params["email_key"],
        hashed_password=params["hashed_password"],
        is_active=params["is_active"],
    )


def delete(db: Connection[Any], user_id: int) -> bool:
    """Delete a user and everything they own; False when there was no such user."""
    return _delete.exec(db, user_id=_check_id(user_id)) > 0


def find(
    db: Connection[Any], *, limit: int = 50, after: str | None = None, is_active: bool | None = None
) -> Page[User]:
    """A keyset page of users in id order; pass ``page.next_cursor`` as ``after`` for the next page."""
    limit = check_limit(limit)
    is_active = optional_flag(is_active, "is_active")
    after_id = decode_cursor(_LISTING, after, (int,))[0] if after is not None else None
    rows = _find.many(db, is_active=is_active, after_id=after_id, fetch=limit + 1)
    return keyset_page(rows, limit, _LISTING, lambda u: (u.id,))


def find_page(
    db: Connection[Any], *, page: int = 1, per_page: int = 50, is_active: bool | None = None
) -> OffsetPage[User]:
    """A numbered page of users in id order, with the total count."""
    per, offset = offset_args(page, per_page)
    is_active = optional_flag(is_active, "is_active")
    items = _find_page.many(db, is_active=is_active, per_page=per, offset=offset)
    return offset_page(items, page, per, count(db, is_active=is_active))


def count(db: Connection[Any], *, is_active: bool | None = None) -> int:
    """How many users (optionally only active or inactive ones)."""
    return _count.scalar(db, is_active=optional_flag(is_active, "is_active"))
