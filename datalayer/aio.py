"""datalayer for asyncio: the same SQL files, records and rules as the sync API, awaited.

>>> from datalayer.aio import connection, user_repo                      # doctest: +SKIP
>>> async with connection() as db:
...     user = await user_repo.create(db, username="ann", email="ann@example.com", hashed_password=h)

Every function here is generated from (or is) the async source its sync twin is generated from
(``tools/async_to_sync.py``): there is no second copy to drift.
"""

from __future__ import annotations

# -- connections, transactions, process defaults (H-pool) --

# -- repositories (H-repos) --

# -- events, validation-backed writes, maintenance (H-events) --

# -- cache (H-cache) --

__all__: list[str] = []
