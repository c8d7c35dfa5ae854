"""Users: create, read, update, delete and list. Queries live in ``sql/users.sql``.

>>> with connection() as db:                                            # doctest: +SKIP
...     u = user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)
...     user_repo.update(db, u.id, is_active=False)

One source, two APIs: ``users_async.py`` is ``datalayer.aio.user_repo`` (awaited); ``users.py``,
generated from it by tools/async_to_sync.py, is ``datalayer.user_repo``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from psycopg import AsyncConnection

from datalayer import sql
from datalayer._acompat import ablocking
from datalayer.project import builtin_sql_dir
from datalayer.records import OffsetPage, Page, User
from datalayer.repos import _pages_async
from datalayer.repos._common import (
    check_any_text,
    check_changes,
    check_email,
    check_flag,
    check_hash,
    check_id,
    check_ids,
    check_username,
    lookup_email_key,
    optional_flag,
)

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

_q = sql.load(builtin_sql_dir() / "users.sql")
_create = _q.bind("create", User)
_get_by_id = _q.bind("get_by_id", User)
_get_by_username = _q.bind("get_by_username", User)
_get_by_email = _q.bind("get_by_email", User)
_get_many = _q.bind("get_many", User)
_update = _q.bind("update", User)
_delete = _q.bind("delete")
_find = _q.bind("find", User)
_find_page = _q.bind("find_page", User)
_count = _q.bind("count", int)

_LISTING = "users.id"


class UserChanges(TypedDict, total=False):
    """The columns ``update`` may change."""

    username: str
    email: str
    hashed_password: str
    is_active: bool


async def create(
    db: AsyncConnection[Any], *, username: str, email: str, hashed_password: str, is_active: bool = True
) -> User:
    """Insert a user; IntegrityConflict (field username or email) when either is taken.

    The e-mail is stored as typed (trimmed) and is what ``User.email`` returns; its identity key
    (``datalayer.text.email_key``) is stored beside it, unique: ``Ann@Example.com`` and
    ``ann@example.com`` are one account.
    """
    username = check_username(username)
    address, key = check_email(email)
    return await _create.aone(
        db,
        username=username,
        email=address,
        email_key=key,
        hashed_password=check_hash(hashed_password),
        is_active=check_flag(is_active, "is_active"),
    )


async def create_with_password(
    db: AsyncConnection[Any], *, username: str, email: str, password: str, is_active: bool = True
) -> User:
    """Like ``create``, hashing ``password`` first (argon2); the plain password is never stored.

    Takes exactly what ``validate_user_data`` returns as ``data``; the password policy is the same.
    """
    from datalayer.passwords import check_password, hash_password

    username = check_username(username)
    check_email(email)
    check_password(password)  # before hashing: argon2 is slow, bad input should not pay for it
    check_flag(is_active, "is_active")
    # argon2 takes tens of milliseconds of CPU: the async form hashes in a worker thread (ablocking), so
    # the event loop keeps serving; the sync form calls it right here (blocking).
    return await create(
        db,
        username=username,
        email=email,
        hashed_password=await ablocking(hash_password, password),
        is_active=is_active,
    )


async def get_by_id(db: AsyncConnection[Any], user_id: int) -> User | None:
    """One user by id, or None."""
    return await _get_by_id.amaybe(db, user_id=check_id(user_id, "user_id"))


async def get_by_username(db: AsyncConnection[Any], username: str) -> User | None:
    """One user by exact username, or None (ValidationError for text PostgreSQL cannot hold)."""
    return await _get_by_username.amaybe(db, username=check_any_text(username, "username"))


async def get_by_email(db: AsyncConnection[Any], email: str) -> User | None:
    """The user whose address is the same mailbox as ``email`` (same ``email_key``), or None.

    ``ANN@example.com`` finds ``ann@Example.com``; an address that cannot be valid finds nobody.
    ValidationError for a non-str or text PostgreSQL cannot hold.
    """
    key = lookup_email_key(email)
    return None if key is None else await _get_by_email.amaybe(db, email_key=key)


async def get_many(db: AsyncConnection[Any], ids: Sequence[int]) -> list[User]:
    """The users among ``ids``, in id order (missing ids are skipped; an empty list gives []).

    At most 10,000 ids; ValidationError for anything but a list of positive integer ids.
    """
    checked = check_ids(ids)
    if not checked:
        return []
    return await _get_many.amany(db, ids=checked)


async def update(db: AsyncConnection[Any], user_id: int, **changes: Unpack[UserChanges]) -> User | None:
    """Change some columns; returns the updated user, or None when there is no such user.

    Unknown fields raise ValidationError (and are refused by mypy through ``UserChanges``).
    """
    check_changes(changes, UserChanges.__annotations__)
    params: dict[str, Any] = dict.fromkeys(("username", "email", "email_key", "hashed_password", "is_active"))
    if "username" in changes:
        params["username"] = check_username(changes["username"])
    if "email" in changes:
        params["email"], params["email_key"] = check_email(changes["email"])
    if "hashed_password" in changes:
        params["hashed_password"] = check_hash(changes["hashed_password"])
    if "is_active" in changes:
        params["is_active"] = check_flag(changes["is_active"], "is_active")
    return await _update.amaybe(db, user_id=check_id(user_id, "user_id"), **params)


async def delete(db: AsyncConnection[Any], user_id: int) -> bool:
    """Delete a user and everything they own; False when there was no such user."""
    return await _delete.aexec(db, user_id=check_id(user_id, "user_id")) > 0


async def find(
    db: AsyncConnection[Any], *, limit: int = 50, after: str | None = None, is_active: bool | None = None
) -> Page[User]:
    """A keyset page of users in id order; pass ``page.next_cursor`` as ``after`` for the next page."""
    return await _pages_async.by_id(
        db, _find, _LISTING, limit=limit, after=after, is_active=optional_flag(is_active, "is_active")
    )


async def find_page(
    db: AsyncConnection[Any], *, page: int = 1, per_page: int = 50, is_active: bool | None = None
) -> OffsetPage[User]:
    """A numbered page of users in id order, with the total count."""
    active = optional_flag(is_active, "is_active")
    return await _pages_async.numbered(db, _find_page, _count, page=page, per_page=per_page, is_active=active)


async def count(db: AsyncConnection[Any], *, is_active: bool | None = None) -> int:
    """How many users (optionally only active or inactive ones)."""
    return await _count.ascalar(db, is_active=optional_flag(is_active, "is_active"))
