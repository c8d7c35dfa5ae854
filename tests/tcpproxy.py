"""A small threaded TCP proxy on 127.0.0.1 whose network the test controls.

Modes (``proxy.mode = ...``, effective at once for every connection):

* ``pass``: forward bytes both ways;
* ``drop``: close both sides of every connection, and refuse new ones;
* ``pause``: stop forwarding but keep the sockets open (a partition: bytes wait in the buffers);
* ``blackhole``: read and discard every byte silently (a middlebox that lost its state).

``half_open()`` closes the server side of every current connection and keeps the client side open
and silent: the client cannot tell, as when the server's host vanished without a FIN or RST.

New connections are accepted in every mode but ``drop`` (in ``pause`` and ``blackhole`` they never
reach the server, as when SYNs are answered by a box that forwards nothing).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Literal

Mode = Literal["pass", "drop", "pause", "blackhole"]


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream`` (host, port) or a unix socket path."""

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self.upstream = upstream
        self.mode: Mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._half: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True).start()

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "drop":
            self.drop_all()

    def drop_all(self) -> None:
        """Close both sides of every current connection (the RST/FIN reaches client and server)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def half_open(self) -> None:
        """Close the server side of every current connection; their clients hear nothing, ever."""
        with self._lock:
            self._half.update(server for _, server in self._pairs)
            servers = [server for _, server in self._pairs]
        for s in servers:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.drop_all()
        self._listener.close()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.upstream, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.upstream)
            return s
        return socket.create_connection(self.upstream)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "drop":
                client.close()
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), name="tcpproxy-pump", daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        """A half-open connection: read the client's bytes and answer nothing, until the proxy closes."""
        while not self._closed and client.fileno() >= 0:
            readable, _, _ = select.select([client], [], [], 0.05)
            if readable and not client.recv(65536):
                return

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peer = {client: server, server: client}
        try:
            while not self._closed:
                if self.mode == "pause":
                    select.select([], [], [], 0.02)  # read nothing: the kernel buffers fill, as in a partition
                    if client.fileno() < 0:
                        return
                    continue
                readable, _, _ = select.select([client, server], [], [], 0.05)
                for s in readable:
                    data = s.recv(65536)
                    if server in self._half:
                        if s is server:
                            self._swallow(client)
                            return
                        continue  # the client's bytes go nowhere
                    if not data:
                        return
                    if self.mode == "blackhole":
                        continue  # swallowed: neither side hears anything
                    if self.mode == "pause":
                        # paused between select and recv: keep the bytes for when the network heals
                        while self.mode == "pause" and not self._closed:
                            select.select([], [], [], 0.02)
                    peer[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()
