"""Backup files taken apart and put back together, for tests that damage them on purpose."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson


class Backup:
    """A backup file taken apart: header, per-table (marker, rows), end; ``seal`` writes it back."""

    def __init__(self, data: bytes) -> None:
        lines = data.splitlines(keepends=True)
        self.header = orjson.loads(lines[0])
        self.sections: list[tuple[dict[str, Any], list[bytes]]] = []
        i = 1
        while b'"__datalayer__":"table"' in lines[i]:
            head, rows = orjson.loads(lines[i]), []
            i += 1
            while not lines[i].startswith(b'{"__datalayer__":'):
                rows.append(lines[i])
                i += 1
            self.sections.append((head, rows))
            i += 1  # end_table
        self.end = orjson.loads(lines[i])

    def section(self, table: str) -> tuple[dict[str, Any], list[bytes]]:
        return next(s for s in self.sections if s[0]["name"] == table)

    def seal(self, path: Path, *, end_rows: dict[str, Any] | None = None) -> bytes:
        out = [orjson.dumps(self.header) + b"\n"]
        totals = {}
        for head, rows in self.sections:
            body = b"".join(rows)
            out += [orjson.dumps(head) + b"\n", body]
            end = {"__datalayer__": "end_table", "name": head["name"], "rows": len(rows),
                   "sha256": hashlib.sha256(body).hexdigest()}
            out.append(orjson.dumps(end) + b"\n")
            totals[head["name"]] = len(rows)
        out.append(orjson.dumps({"__datalayer__": "end", "rows": end_rows or totals}) + b"\n")
        data = b"".join(out)
        path.write_bytes(data)
        return data
