"""Small builders for test rows."""

from __future__ import annotations

import itertools
from typing import Any

from datalayer import (
    AnalysisFile,
    DataAnalysis,
    ToolGeneration,
    User,
    analysis_file_repo,
    data_analysis_repo,
    tool_generation_repo,
    user_repo,
)

_n = itertools.count(1)


def user(db: Any, name: str | None = None) -> User:
    name = name or f"user{next(_n)}"
    return user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password="h")


def analysis(db: Any, owner: User, name: str | None = None, **kw: Any) -> DataAnalysis:
    return data_analysis_repo.create(
        db, user_id=owner.id, name=name or f"analysis {next(_n)}", analysis_type=kw.pop("analysis_type", "cohort"), **kw
    )


def file(db: Any, a: DataAnalysis, file_type: str = "csv", size: int = 100) -> AnalysisFile:
    n = next(_n)
    return analysis_file_repo.create(
        db, analysis_id=a.id, filename=f"f{n}.{file_type}", file_type=file_type, size_bytes=size,
        storage_uri=f"s3://bucket/f{n}.{file_type}",
    )


def generation(db: Any, owner: User, tool_type: str = "chart", **kw: Any) -> ToolGeneration:
    return tool_generation_repo.create(db, user_id=owner.id, tool_type=tool_type, **kw)
