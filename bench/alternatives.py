"""The contenders that are not datalayer: SQLAlchemy Core and ORM (sync and asyncio), aiosql, asyncpg, raw psycopg."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiosql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import BigInteger, Boolean, DateTime, Text, bindparam, create_engine, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from datalayer.records import User

COLUMNS = "id, username, email, hashed_password, is_active, created_at, updated_at"
GET_SQL = f"SELECT {COLUMNS} FROM users WHERE id = %s"
ASYNCPG_GET_SQL = GET_SQL.replace("%s", "$1")  # asyncpg speaks numbered placeholders
# email_key is the e-mail identity datalayer computes in Python; the other contenders get it ready-made.
INSERT_SQL = (
    f"INSERT INTO users (username, email, email_key, hashed_password) VALUES (%s, %s, %s, %s) RETURNING {COLUMNS}"
)

AIOSQL = f"""
-- name: get_user(id)^
-- record_class: User
SELECT {COLUMNS} FROM users WHERE id = :id;

-- name: create_user(username, email, email_key, hashed_password)<!
-- record_class: User
INSERT INTO users (username, email, email_key, hashed_password)
VALUES (:username, :email, :email_key, :hashed_password)
RETURNING {COLUMNS};
"""


def aiosql_queries() -> Any:
    return aiosql.from_str(AIOSQL, "psycopg", record_classes={"User": User})


class Base(DeclarativeBase):
    pass


class UserORM(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text)
    email_key: Mapped[str] = mapped_column(Text)
    hashed_password: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default="now()")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default="now()")


class LogORM(Base):
    __tablename__ = "system_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, server_default=None)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    service: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[Any] = mapped_column(JSONB)
    user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


def _url_and_password(conninfo: str) -> tuple[str, str]:
    params = conninfo_to_dict(conninfo)
    host = params.get("host", "")
    url = f"postgresql+psycopg://{params.get('user', 'postgres')}@/{params['dbname']}?host={host}&port={params['port']}"
    # The password goes to psycopg as a keyword, never into the URL (it would need escaping).
    return url, str(params.get("password", ""))


def engine_for(conninfo: str, **kw: Any) -> Any:
    url, password = _url_and_password(conninfo)
    return create_engine(url, connect_args={"password": password}, **kw)


def async_engine_for(conninfo: str, **kw: Any) -> Any:
    """SQLAlchemy's asyncio engine on the same driver (psycopg's AsyncConnection) as the others."""
    url, password = _url_and_password(conninfo)
    return create_async_engine(url, connect_args={"password": password}, **kw)


def asyncpg_params(conninfo: str) -> dict[str, Any]:
    """asyncpg.connect()'s keywords for a libpq conninfo (host may be a unix socket directory)."""
    params = conninfo_to_dict(conninfo)
    return {
        "host": params.get("host"),
        "port": int(params.get("port") or 5432),
        "user": params.get("user", "postgres"),
        "database": params["dbname"],
        "password": params.get("password") or None,
    }


def core_select() -> Any:
    """A prebuilt ``select(...).where(id = :id)`` (the fastest way to use SQLAlchemy Core)."""
    table = UserORM.__table__
    return select(*[table.c[c.strip()] for c in COLUMNS.split(",")]).where(table.c.id == bindparam("id"))


def orm_get(session: Session, user_id: int) -> Any:
    return session.get(UserORM, user_id, populate_existing=True)


async def orm_get_async(session: AsyncSession, user_id: int) -> Any:
    return await session.get(UserORM, user_id, populate_existing=True)


def to_record(row: Any) -> User:
    return User(*row)


__all__ = [
    "AIOSQL",
    "ASYNCPG_GET_SQL",
    "GET_SQL",
    "INSERT_SQL",
    "LogORM",
    "UserORM",
    "aiosql_queries",
    "async_engine_for",
    "asyncpg_params",
    "core_select",
    "engine_for",
    "orm_get",
    "orm_get_async",
    "to_record",
]
