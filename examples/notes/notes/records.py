"""The records the notes queries return."""

from datetime import datetime

import attrs


@attrs.frozen
class Note:
    id: int
    title: str
    body: str
    tags: list[str]
    created_at: datetime
