"""Redis Cluster helpers shared by the sync and the async cache."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from datalayer._urls import netloc

__all__ = ["node_urls"]


def node_urls(seed_url: str, client: Any) -> list[str]:
    """The URL of every node ``client`` (a cluster client, or None before it exists) knows, in a stable
    order, else the seed's: each is ``seed_url`` with its host and port."""
    nodes = client.get_nodes() if client is not None else []
    if not nodes:
        return [seed_url]
    parts = urlsplit(seed_url)
    return sorted({parts._replace(netloc=netloc(node.host, str(node.port))).geturl() for node in nodes})
