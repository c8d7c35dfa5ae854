"""JSON values come back from jsonb as written: large floats stay floats of the same value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from factories import user

from datalayer import cache_entry_repo, data_analysis_repo, system_log_repo, tool_generation_repo
from datalayer._jsonb import dumps

# 9.048052627016022e16 is what hypothesis found: PostgreSQL's numeric returned it as the int
# 90480526270160220, which differs from the float's exact value 90480526270160224.
NUMBERS = [9.048052627016022e16, 1e16, -1.7976931348623157e308, 2.5e22, 1e-7, 0.1, 3.0, 2**60, -(2**63), 0]
VALUE = {"numbers": NUMBERS, "nested": {"big": 9.048052627016022e16, "list": [[1e300]]}, "text": "1e16 stays text"}


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON types all the way down (1e16 == 10**16 in Python, but not as data)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


def test_dumps_spells_out_only_large_floats() -> None:
    assert dumps({"a": 1.5, "b": 1e-7, "s": "9e99"}) == orjson.dumps({"a": 1.5, "b": 1e-7, "s": "9e99"})
    assert dumps([9.048052627016022e16]) == b"[90480526270160224.0]"
    assert _same(orjson.loads(dumps(VALUE)), VALUE)


def test_every_jsonb_column_round_trips_large_floats(db: Any) -> None:
    owner = user(db)
    a = data_analysis_repo.create(db, user_id=owner.id, name="n", analysis_type="t", parameters=VALUE)
    assert _same(data_analysis_repo.get_by_id(db, a.id).parameters, VALUE)  # type: ignore[union-attr]
    g = tool_generation_repo.create(db, user_id=owner.id, tool_type="t", spec=VALUE)
    assert _same(tool_generation_repo.get_by_id(db, g.id).spec, VALUE)  # type: ignore[union-attr]
    cache_entry_repo.set(db, "jsonb:floats", VALUE, ttl=60)
    assert _same(cache_entry_repo.get(db, "jsonb:floats").value, VALUE)  # type: ignore[union-attr]
    e = system_log_repo.create(db, service="s", level="INFO", message="m", details=VALUE)
    assert _same(system_log_repo.get_by_id(db, e.id).details, VALUE)  # type: ignore[union-attr]
    now = datetime.now(UTC)
    system_log_repo.bulk_insert(db, [{"service": "bulk", "level": "INFO", "message": "m", "details": VALUE}])
    bulk = system_log_repo.find(db, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1), service="bulk")
    assert len(bulk.items) == 1 and _same(bulk.items[0].details, VALUE)
