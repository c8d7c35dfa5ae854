"""The ``datalayer`` command: mirrors the library, adds nothing the library lacks."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from datalayer.errors import DataLayerError

__all__ = ["main"]


def _cmd_migrate(args: argparse.Namespace) -> int:
    from datalayer.migrate import setup_database

    applied = setup_database(partitions_ahead=args.partitions_ahead)
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from datalayer.migrate import migration_status

    states = migration_status()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": s.id,
                        "applied": s.applied,
                        "applied_at": s.applied_at and s.applied_at.isoformat(),
                        "changed": s.changed,
                        "problem": s.problem,
                    }
                    for s in states
                ],
                indent=2,
            )
        )
    else:
        for s in states:
            mark = "CHANGED" if s.changed else ("applied" if s.applied else "pending")
            when = f" {s.applied_at:%Y-%m-%d %H:%M:%S} UTC" if s.applied_at else ""
            print(f"{mark:<8} {s.id}{when}")
            if s.problem:
                print(f"         {s.problem}")
    return 1 if any(s.changed for s in states) else 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from datalayer.migrate import plan_sql

    print(plan_sql(), end="")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    from datalayer.health import check_database_health

    report = check_database_health()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["status"])
        for name, check in report["checks"].items():
            print(f"  {name:<18} {'ok ' if check['ok'] else 'BAD'} {check['detail']}")
    return 0 if report["status"] == "healthy" else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from datalayer.demo import run_demo

    return run_demo()


def _cmd_reset(args: argparse.Namespace) -> int:
    from datalayer.migrate import reset_database

    if not args.yes:
        print("reset drops every table and its data; run it again with --yes to confirm", file=sys.stderr)
        return 2
    applied = reset_database(confirm=True)
    print(f"reset: re-applied {', '.join(applied)}")
    return 0


def _cmd_partitions(args: argparse.Namespace) -> int:
    from datalayer.partitions import ensure_log_partitions, list_log_partitions
    from datalayer.pool import connection

    with connection() as db:
        if args.action == "maintain":
            created = ensure_log_partitions(db, ahead=args.ahead)
            print(f"created: {', '.join(created)}" if created else "all partitions present")
        for p in list_log_partitions(db):
            print(f"  {p.name:<24} ~{p.estimated_rows:>10,} rows  {p.total_bytes / 1024:>10,.0f} KiB")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from datalayer.contracts import check_scratch

    findings = check_scratch()
    for f in findings:
        print(f)
    print(f"{len(findings)} finding(s)" if findings else "every query matches its record", file=sys.stderr)
    return 1 if findings else 0


def _cmd_lint(args: argparse.Namespace) -> int:
    from datalayer.lint import lint_migrations

    code, report = lint_migrations()
    if report:
        print(report)
    print("migrations pass squawk's rules" if code == 0 else "squawk found problems", file=sys.stderr)
    return 1 if code else 0


class _Progress:
    """Rows done per table on stderr: one updating line on a terminal, a line per 10% otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int] = ("", 0)

    def __call__(self, table: str, rows: int) -> None:
        if self.tty:
            print(f"\r  {table:<18} {rows:>12,} rows", end="", file=sys.stderr, flush=True)
        elif table != self.last[0] or rows >= self.last[1] + 100_000:
            print(f"  {table:<18} {rows:>12,} rows", file=sys.stderr, flush=True)
        self.last = (table, rows)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _cmd_stats(args: argparse.Namespace) -> int:
    from datalayer.maintenance import get_database_stats
    from datalayer.pool import connection

    with connection() as db:
        stats = get_database_stats(db)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"users: {stats['users']:,}    analyses in the last 24 h: {stats['recent_analyses']:,}")
    for key in ("analyses_by_status", "tool_generations_by_status", "log_events_last_hour"):
        print(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v:,}" for k, v in stats[key].items()))
    print("tables:")
    for name, t in stats["tables"].items():
        print(f"  {name:<18} ~{t['estimated_rows']:>12,} rows {t['total_bytes'] / 1024:>12,.0f} KiB")
    return 0


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from datalayer.maintenance import cleanup_old_data
    from datalayer.pool import connection

    with connection() as db:
        result = cleanup_old_data(db, days=args.days, whole_days=args.whole_days)
    print(
        f"removed {result['system_logs']:,} log rows ({result['partitions_dropped']} day partitions dropped) "
        f"older than {result['cutoff']}, and {result['cache_entries']:,} expired cache entries"
    )
    return 0


def _cmd_backup(args: argparse.Namespace) -> int:
    from datalayer.backup import backup_database_data
    from datalayer.pool import connection

    progress = _Progress()
    with connection() as db:
        backup_database_data(db, args.file, progress=progress)
    progress.done()
    print(f"backup written to {args.file}")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    from datalayer.backup import restore_database_data
    from datalayer.pool import connection

    progress = _Progress()
    with connection() as db:
        counts = restore_database_data(db, args.file, progress=progress)
    progress.done()
    print("restored: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from datalayer.cache import get_cache_manager

    cache = get_cache_manager()
    if args.action == "flush":
        deleted = cache.flush(args.prefix)
        print(f"flushed {deleted} Redis keys under {cache.keys.prefix}:{args.prefix or ''} (and the table)")
        return 0
    stats = cache.stats(probe=True)
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        print(
            f"redis: {stats['redis']['url']} ({'reachable' if stats['redis']['ping'] else 'UNREACHABLE'}), "
            f"breaker {stats['breaker']['state']}, generation {stats['generation']}"
        )
        print(f"table: {stats['table']['entries']} live entries")
    return 0 if stats["redis"]["ping"] else 1


def _cmd_roles(args: argparse.Namespace) -> int:
    import os

    from datalayer.pool import connection
    from datalayer.roles import create_roles

    with connection() as db:
        created = create_roles(
            db,
            app_role=args.app_role,
            readonly_role=args.readonly_role,
            # from the environment, never argv (visible to every user in ps)
            app_password=os.environ.get("DATALAYER_APP_PASSWORD") or None,
            readonly_password=os.environ.get("DATALAYER_READONLY_PASSWORD") or None,
        )
    for role, new in created.items():
        print(f"{role}: {'created' if new else 'exists'}, privileges granted")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datalayer",
        description="SQL-first data layer: migrations, health and maintenance. Settings come from the "
        "environment (DATABASE_URL, REDIS_URL, POOL_SIZE, … see .env.example); with no database setting "
        "an embedded PostgreSQL is used.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what datalayer does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply pending migrations and create log partitions ahead")
    p.add_argument("--partitions-ahead", type=int, default=7, metavar="N", help="days of partitions (default 7)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("status", help="list migrations: applied, pending, or changed since applied")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("plan", help="print the SQL that migrate would run, without running it")
    p.add_argument("--sql", action="store_true", help="print SQL (the default and only format)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("health", help="check connectivity, migrations, partitions and indexes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_health)

    p = sub.add_parser("check", help="verify every query against a scratch migrated database (exit 1 on findings)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("lint-migrations", help="run squawk's migration safety rules on migrations/")
    p.set_defaults(func=_cmd_lint)

    p = sub.add_parser("demo", help="run the end-to-end demo (embedded servers when nothing is configured)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("stats", help="row counts by status and level, table and partition sizes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_stats)

    p = sub.add_parser("cleanup", help="drop log partitions older than N days, purge expired cache entries")
    p.add_argument("--days", type=int, default=30, metavar="N", help="keep the last N days of logs (default 30)")
    p.add_argument(
        "--whole-days",
        action="store_true",
        help="keep the cutoff's whole UTC day (drop partitions only, no row-by-row DELETE)",
    )
    p.set_defaults(func=_cmd_cleanup)

    p = sub.add_parser("backup", help="write every table to FILE (streaming, atomic)")
    p.add_argument("file")
    p.set_defaults(func=_cmd_backup)

    p = sub.add_parser("restore", help="load FILE into an empty, migrated database in one transaction")
    p.add_argument("file")
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser("cache", help="the cache: stats, or flush keys under a prefix")
    p.add_argument("action", choices=["stats", "flush"])
    p.add_argument("--prefix", default=None, help="flush only keys under CACHE_PREFIX:<prefix> (e.g. user:)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser("roles", help="create the application (DML only) and read-only roles, idempotently")
    p.add_argument("action", choices=["create"])
    p.add_argument("--app-role", default="datalayer_app")
    p.add_argument("--readonly-role", default="datalayer_readonly")
    p.set_defaults(func=_cmd_roles)

    p = sub.add_parser("reset", help="roll back every migration and re-apply: ALL DATA IS LOST")
    p.add_argument("--yes", action="store_true", help="confirm")
    p.set_defaults(func=_cmd_reset)

    p = sub.add_parser("partitions", help="system_log partitions: list, or create ahead")
    p.add_argument("action", choices=["list", "maintain"])
    p.add_argument("--ahead", type=int, default=7, metavar="N", help="days ahead for maintain (default 7)")
    p.set_defaults(func=_cmd_partitions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datalayer`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        code: int = args.func(args)
    except DataLayerError as e:
        print(f"datalayer: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
