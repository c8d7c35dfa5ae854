"""Generate datalayer's sync modules from their async sources: one source, two APIs, no drift.

Every ``datalayer/**/<name>_async.py`` is the source of ``<name>.py`` beside it. The async code is
written once; this script removes ``async``/``await`` and renames the names below (unasync does the
token work), then formats the result with ruff. CI runs ``--check``, which fails when a generated
file differs from what its source gives.

    python tools/async_to_sync.py            # regenerate
    python tools/async_to_sync.py --check    # exit 1 listing stale files
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "datalayer"
SUFFIX = "_async"

# Async name -> sync name. Module names (``pool_async`` -> ``pool``) are added for every source file.
# Pairs of hand-written twins live in datalayer/_acompat.py (async first, sync second).
REPLACEMENTS = {
    "AsyncConnection": "Connection",
    "AsyncCursor": "Cursor",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncClientCursor": "ClientCursor",
    "AsyncCopy": "Copy",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
    "AsyncGenerator": "Generator",
    "asynccontextmanager": "contextmanager",
    "AsyncExitStack": "ExitStack",
    # datalayer/_acompat.py
    "ALock": "Lock",
    "AEvent": "Event",
    "AQueue": "Queue",
    "asleep": "sleep",
    "aspawn": "spawn",
    "agather": "gather",
    "ablocking": "blocking",
    "acall_hook": "call_hook",
    "AHook": "Hook",
    "AJob": "Job",
    "AThunk": "Thunk",
    "AProducer": "Producer",
    "aproduce": "produce",
    "ASignal": "Signal",
    "ARLock": "RLock",
    "AShared": "Shared",
    # datalayer/cache/_acompat.py: redis.asyncio against redis (a dotted name is several tokens)
    "ARedis": "Redis",
    "ARedisCluster": "RedisCluster",
    "AClient": "Client",
    "aredis_client": "redis_client",
    "aredis_cluster_client": "redis_cluster_client",
    "aclose_redis": "close_redis",
    "aclose_seeds": "close_seeds",
    # datalayer/_aio_defaults.py is hand-kept beside datalayer/defaults.py: the async process defaults
    "_aio_defaults": "defaults",
    # datalayer/cache/manager_async.py
    "AsyncCacheManager": "CacheManager",
    "aclose_quietly": "close_quietly",
    # datalayer/repos/_common.py: the connection check of the async repository sources
    "check_aconnection": "check_connection",
    "AAPI": "API",
    "acurrent_owner": "current_owner",
    "ARows": "Rows",
    "_afailed": "_failed",
    "_aonly_row": "_only_row",
    "_amaybe_row": "_maybe_row",
    "_aall_rows": "_all_rows",
    "_atraced": "_traced",
    "_aanswer": "_answer",
    "AsyncDataLayerPool": "DataLayerPool",
    "AsyncDataLayerConnection": "DataLayerConnection",
    # datalayer/_replicas_async.py
    "AsyncReplicaSet": "ReplicaSet",
    # datalayer/_run.py: BoundQuery is both runners; its async methods are the sync ones' names with an 'a'
    "_AsyncRunner": "_SyncRunner",
    "_aexecute": "_execute",
    "_aretry_read": "_retry_read",
    "_arecover": "_recover",
    "_acopy_rows": "_copy_rows",
    "aone": "one",
    "amaybe": "maybe",
    "amany": "many",
    "ascalar": "scalar",
    "aexec": "exec",
    "acopy": "copy",
}

HEADER = "# Generated from {source} by tools/async_to_sync.py: edit that file, then run the tool.\n"


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob(f"*{SUFFIX}.py") if "__pycache__" not in p.parts)


def target(source: Path) -> Path:
    return source.with_name(source.name[: -len(SUFFIX) - 3] + ".py")


def generate(source: Path, names: dict[str, str], work: Path) -> str:
    """The sync module ``source`` gives, formatted."""
    staged = work / "_async" / source.name
    staged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, staged)
    unasync.unasync_files([str(staged)], [unasync.Rule("/_async/", "/_sync/", additional_replacements=names)])
    text = (work / "_sync" / source.name).read_text(encoding="utf-8")
    text = HEADER.format(source=source.relative_to(ROOT).as_posix()) + text
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(target(source)), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"ruff format failed on the sync twin of {source}: {out.stderr}")
    fixed = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--fix-only",
            "--select",
            "I,F401",
            "--stdin-filename",
            str(target(source)),
            "-",
        ],
        input=out.stdout,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    return fixed.stdout if fixed.returncode == 0 and fixed.stdout else out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    args = parser.parse_args(argv)
    found = sources()
    names = dict(REPLACEMENTS)
    for source in found:
        names[source.stem] = target(source).stem
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in found:
            text = generate(source, names, Path(tmp))
            out = target(source)
            if out.exists() and out.read_text(encoding="utf-8") == text:
                continue
            stale.append(out)
            if not args.check:
                out.write_text(text, encoding="utf-8")
    for out in stale:
        verb = "stale" if args.check else "written"
        print(f"{out.relative_to(ROOT)}: {verb}", file=sys.stderr)
    if args.check and stale:
        print("run: python tools/async_to_sync.py (the sync modules are generated from *_async.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
