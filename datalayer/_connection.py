"""The pooled connection classes, sync and async, and what datalayer knows about a connection without
a round trip: one place to import them from.

``DataLayerConnection`` (``_pooled``) is generated from ``AsyncDataLayerConnection`` (``_pooled_async``)
by ``tools/async_to_sync.py``; the checks and limits both use are in ``_liveness``.
"""

from __future__ import annotations

from datalayer._liveness import alive_idle, known_dead, network_params, wait_limit
from datalayer._pooled import DataLayerConnection, reset_session
from datalayer._pooled_async import AsyncDataLayerConnection
from datalayer._pooled_async import reset_session as areset_session

__all__ = [
    "AsyncDataLayerConnection",
    "DataLayerConnection",
    "alive_idle",
    "areset_session",
    "known_dead",
    "network_params",
    "reset_session",
    "wait_limit",
]
