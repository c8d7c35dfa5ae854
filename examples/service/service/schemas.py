"""What the API takes and returns (pydantic models for FastAPI's validation and OpenAPI).

Request models only check shapes; datalayer checks the content (lengths, e-mail, JSON rules) and its
ValidationError becomes a 422 naming the field, through datalayer.fastapi's handlers. Response models
are built from datalayer's records by attribute (``from_attributes``): no dict in between.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnalysisIn",
    "AnalysisOut",
    "AnalysisPage",
    "AnalysisWithFilesOut",
    "FileIn",
    "FileOut",
    "Login",
    "Registration",
    "StatsOut",
    "Token",
    "UserOut",
]

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class Registration(BaseModel):
    username: str
    email: str
    password: str


class Login(BaseModel):
    username: str
    password: str


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_in: int


class UserOut(_Out):
    id: int
    username: str
    email: str
    created_at: datetime


class AnalysisIn(BaseModel):
    name: str
    analysis_type: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class AnalysisOut(_Out):
    id: int
    name: str
    analysis_type: str
    parameters: dict[str, Any]
    status: str
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class FileIn(BaseModel):
    filename: str
    file_type: str
    size_bytes: int
    storage_uri: str
    checksum: str | None = None


class FileOut(_Out):
    id: int
    analysis_id: int
    filename: str
    file_type: str
    size_bytes: int
    storage_uri: str
    checksum: str | None
    created_at: datetime


class AnalysisWithFilesOut(AnalysisOut):
    files: list[FileOut]


class Page(_Out, Generic[T]):
    items: list[T]
    next_cursor: str | None


AnalysisPage = Page[AnalysisOut]


class StatsOut(_Out):
    analyses: int
    pending: int
    running: int
    completed: int
    failed: int
    files: int
    total_bytes: int
