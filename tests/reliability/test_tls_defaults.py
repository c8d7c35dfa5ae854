"""The password never leaves the client in clear by default, and a remote server must prove who it is.

A fake server of the test's own (a loopback socket speaking just enough of the PostgreSQL protocol)
declines TLS, or offers TLS with a certificate nobody vouches for, and asks for a cleartext password:
it must never receive it. Trust-auth servers (the test server: PostgreSQL 15 or the embedded one) still
connect with the same defaults.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from datalayer import ConfigError, Settings
from datalayer.config import DatabaseTarget
from datalayer.pool import open_pool
from datalayer.testing import TestServer

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
PASSWORD = "TopSecret-h5-77"


class FakePostgres:
    """Accepts connections, declines (or accepts) TLS, asks for a cleartext password, records what it gets."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.startups = 0
        self.received: list[bytes] = []
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self._session(conn)
                except (OSError, ssl.SSLError, struct.error):
                    pass  # the client hung up: what it sent before is recorded

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise OSError("client closed")
            data += chunk
        return data

    def _session(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!i", self._read(conn, 4))
            body = self._read(conn, length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code == SSL_REQUEST and self.tls is not None:
                conn.sendall(b"S")
                with self.tls.wrap_socket(conn, server_side=True) as wrapped:
                    self._session(wrapped)
                return
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.sendall(b"N")
            else:
                break
        self.startups += 1
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = self._read(conn, 1)
        (length,) = struct.unpack("!i", self._read(conn, 4))
        payload = self._read(conn, length - 4)
        if kind == b"p":
            self.received.append(payload)
        # ErrorResponse, so that a client which did send a password gets a definite answer.
        fields = b'SFATAL\x00C28P01\x00Mpassword authentication failed for user "app"\x00\x00'
        conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)

    def url(self, host: str | None = None, query: str = "") -> str:
        where = host or self.host
        return f"postgresql://app:{PASSWORD}@{where}:{self.port}/app" + (f"?{query}" if query else "")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakePostgres]:
    server = FakePostgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS server context with a certificate no client trusts (what an impostor can make)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("fake-tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
        check=True, capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    return ctx


def _connect(url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": url, "CONNECT_TIMEOUT": "5"})
    open_pool(settings, wait=True).close()


def test_fake_server_gets_the_password_only_when_cleartext_is_explicitly_allowed(fake: FakePostgres) -> None:
    # The control: the fake server does capture a password when the user explicitly allows cleartext.
    with pytest.raises(ConfigError):
        _connect(fake.url(query="require_auth=password"))
    assert fake.received and PASSWORD.encode() in fake.received[0]


def test_cleartext_password_request_is_refused_by_default(fake: FakePostgres) -> None:
    with pytest.raises(ConfigError) as e:
        _connect(fake.url())
    assert fake.startups >= 1, "the client never reached the authentication step"
    assert fake.received == []
    assert PASSWORD not in str(e.value)
    assert "cleartext password" in str(e.value)


def test_sslmode_require_with_an_impostor_certificate_gets_no_password(self_signed: ssl.SSLContext) -> None:
    server = FakePostgres(tls=self_signed)
    try:
        with pytest.raises(ConfigError):
            _connect(server.url(query="sslmode=require"))
        assert server.startups >= 1
        assert server.received == []
    finally:
        server.close()


@pytest.mark.parametrize("tls", [False, True], ids=["declines-tls", "impostor-cert"])
def test_remote_host_is_verified_by_default(tls: bool, request: pytest.FixtureRequest) -> None:
    # A remote host gets verify-full by default ...
    remote = Settings.from_env({"DATABASE_URL": "postgresql://app:pw@db.example.com/x"})
    assert remote.database is not None and remote.database.params["sslmode"] == "verify-full"
    # ... and verify-full gives an impostor nothing. The impostor listens on loopback: tests send
    # traffic to no other address of this machine.
    server = FakePostgres(tls=request.getfixturevalue("self_signed") if tls else None)
    try:
        with pytest.raises(ConfigError):
            _connect(server.url(query="sslmode=verify-full"))
        assert server.received == [] and server.startups == 0  # nothing past the TLS handshake
    finally:
        server.close()


def test_explicit_sslmode_is_kept_and_a_conflict_is_refused() -> None:
    s = Settings.from_env({"DATABASE_URL": "postgresql://u@db.example.com/x?sslmode=require"})
    assert s.database is not None and s.database.params["sslmode"] == "require"
    parts = Settings.from_env({"DATABASE_HOST": "db.example.com", "DATABASE_SSLMODE": "disable"})
    assert parts.database is not None and parts.database.params["sslmode"] == "disable"
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"DATABASE_URL": "postgresql://u@db.example.com/x?sslmode=disable",
                           "DATABASE_SSLMODE": "verify-full"})
    assert e.value.variable == "DATABASE_SSLMODE"
    same = Settings.from_env({"DATABASE_URL": "postgresql://u@db.example.com/x?sslmode=verify-ca",
                              "DATABASE_SSLMODE": "verify-ca"})
    assert same.database is not None and same.database.params["sslmode"] == "verify-ca"


@pytest.mark.parametrize(
    ("host", "remote"),
    [
        ("127.0.0.1", False), ("localhost", False), ("::1", False), ("/var/run/postgresql", False),
        ("127.0.0.1,localhost", False), ("db.example.com", True), ("10.0.0.5", True),
        ("localhost,db.example.com", True),
        # Not exactly "localhost": glibc does not find "localhost." in /etc/hosts and asks DNS, so
        # whoever answers DNS would choose the server. Only literal loopback, "localhost" and sockets are local.
        ("localhost.", True), ("LOCALHOST", True), ("localhost.localdomain", True), ("localhost,localhost.", True),
        ("127.0.0.2", False), ("0:0:0:0:0:0:0:1", False), ("@abstract", False),
    ],
)
def test_which_hosts_count_as_remote(host: str, remote: bool) -> None:
    target = DatabaseTarget(params={"host": host, "dbname": "x"})
    assert target.params["require_auth"] == "!password"
    assert target.params.get("sslmode") == ("verify-full" if remote else None)


def test_localhost_with_a_dot_gets_verify_full_from_every_variable() -> None:
    for env in ({"DATABASE_HOST": "localhost."}, {"DATABASE_URL": "postgresql://u@localhost./x"},
                {"DATABASE_URL": "postgresql://u@LOCALHOST./x"}):
        s = Settings.from_env(env)
        assert s.database is not None and s.database.params["sslmode"] == "verify-full", env


def test_hostaddr_decides_where_the_connection_goes() -> None:
    # host names the certificate; hostaddr is where libpq connects.
    local = DatabaseTarget(params={"host": "db.example.com", "hostaddr": "127.0.0.1", "dbname": "x"})
    assert "sslmode" not in local.params
    remote = DatabaseTarget(params={"host": "localhost", "hostaddr": "10.1.2.3", "dbname": "x"})
    assert remote.params["sslmode"] == "verify-full"


def test_trust_servers_still_connect_with_the_defaults(datalayer_server: TestServer) -> None:
    target = datalayer_server.target
    assert target.params["require_auth"] == "!password"
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_libpq_supports_require_auth() -> None:
    # The guarantee rests on libpq >= 16 (psycopg[binary] bundles a recent one).
    assert psycopg.pq.version() >= 160000
    assert "require_auth" in {o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults() if o.keyword}


def test_readme_states_what_each_sslmode_protects_against() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    config = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for mode in ("verify-full", "verify-ca", "require", "prefer", "disable", "require_auth"):
        assert f"`{mode}`" in config, mode
