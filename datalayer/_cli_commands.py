"""What each ``datalayer`` command does (the parser and error handling are in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from datalayer.errors import ConfigError

if TYPE_CHECKING:
    from datalayer.project import Project

__all__ = [
    "cmd_backup",
    "cmd_cache",
    "cmd_check",
    "cmd_cleanup",
    "cmd_demo",
    "cmd_health",
    "cmd_lint",
    "cmd_migrate",
    "cmd_partitions",
    "cmd_path",
    "cmd_plan",
    "cmd_reset",
    "cmd_restore",
    "cmd_roles",
    "cmd_stats",
    "cmd_status",
]


def project_of(args: argparse.Namespace) -> Project:
    """The project of this run, read by main: ``--project DIR``, else ``find_project()``."""
    loaded: Project | None = getattr(args, "loaded_project", None)
    if loaded is not None:
        return loaded
    from datalayer.project import find_project

    return find_project()


def cmd_migrate(args: argparse.Namespace) -> int:
    from datalayer.migrate import setup_database

    applied = setup_database(partitions_ahead=args.partitions_ahead, project=project_of(args))
    print(f"applied: {', '.join(applied)}" if applied else "up to date: no migration was pending")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from datalayer.migrate import migration_status

    states = migration_status(project=project_of(args))
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


def cmd_plan(args: argparse.Namespace) -> int:
    from datalayer.migrate import plan_sql

    print(plan_sql(project=project_of(args)), end="")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from datalayer.health import check_database_health

    report = check_database_health(project=project_of(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["status"])
        for name, check in report["checks"].items():
            print(f"  {name:<18} {'ok ' if check['ok'] else 'BAD'} {check['detail']}")
    return 0 if report["status"] == "healthy" else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from datalayer.demo import run_demo

    return run_demo()


def cmd_reset(args: argparse.Namespace) -> int:
    from datalayer.migrate import reset_database

    if not args.yes:
        print("reset drops every table and its data; run it again with --yes to confirm", file=sys.stderr)
        return 2
    applied = reset_database(confirm=True, project=project_of(args))
    print(f"reset: re-applied {', '.join(applied)}")
    return 0


def cmd_partitions(args: argparse.Namespace) -> int:
    from datalayer.defaults import connection
    from datalayer.partitions import ensure_log_partitions, list_log_partitions

    if not project_of(args).builtin:
        raise ConfigError(
            "system_log partitions belong to datalayer's built-in schema, which this project leaves out "
            "([tool.datalayer] builtin = false); there is nothing to list or maintain"
        )
    with connection() as db:
        if args.action == "maintain":
            created = ensure_log_partitions(db, ahead=args.ahead)
        partitions = list_log_partitions(db)
    days = [p.day for p in partitions if p.day is not None]
    if args.action == "maintain":
        today = datetime.now(UTC).date()
        have, through = set(days), today - timedelta(days=1)
        while through + timedelta(days=1) in have:  # the unbroken run from today on
            through += timedelta(days=1)
        horizon = (
            f"every day from today through {through} has its partition"
            if through >= today
            else ("today has no partition")
        )
        if (missing := (today + timedelta(days=args.ahead)) - through) > timedelta(0):
            horizon += f"; {missing.days} day(s) of the {args.ahead} asked for could not be created (see the log)"
        print(f"created {created} day partition(s); {horizon} ({args.ahead} day(s) ahead were asked for)")
    for p in partitions:
        print(f"  {p.name:<24} ~{p.estimated_rows:>10,} rows (estimate)  {p.total_bytes / 1024:>10,.0f} KiB")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from datalayer.contracts import check_scratch

    found = check_scratch(project=project_of(args), notes=True)
    findings = [f for f in found if not f.note]
    for f in findings:
        print(f)
    for f in found:  # what check could not verify: the run time and the test plugin's strict mode cover it
        if f.note:
            print(f)
    print(f"{len(findings)} finding(s)" if findings else "every query matches its record", file=sys.stderr)
    return 1 if findings else 0


def cmd_lint(args: argparse.Namespace) -> int:
    from datalayer.lint import lint_migrations

    code, report = lint_migrations(project=project_of(args))
    if report:
        print(report)
    print("migrations pass squawk's rules" if code == 0 else "squawk found problems", file=sys.stderr)
    return 1 if code else 0


class Progress:
    """Rows done per table on stderr: one updating line on a terminal, a line per 100,000 rows otherwise."""

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


def cmd_stats(args: argparse.Namespace) -> int:
    from datalayer.defaults import connection
    from datalayer.maintenance import get_database_stats

    with connection() as db:
        stats = get_database_stats(db, project=project_of(args))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    if "users" in stats:  # the built-in schema's counts: only for a project with builtin = true
        print("exact counts:")
        print(f"  users {stats['users']:,}; analyses created in the last 24 h {stats['recent_analyses']:,}")
        for key in ("analyses_by_status", "tool_generations_by_status", "log_events_last_hour"):
            print(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v:,}" for k, v in stats[key].items()))
    print("tables (size on disk; rows are the planner's estimate, 0 until the table is first ANALYZEd):")
    for name, t in stats["tables"].items():
        print(f"  {name:<18} ~{t['estimated_rows']:>12,} rows (estimate) {t['total_bytes'] / 1024:>12,.0f} KiB")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from datalayer.defaults import connection
    from datalayer.maintenance import cleanup_old_data

    with connection() as db:
        result = cleanup_old_data(db, days=args.days, whole_days=args.whole_days)
    print(
        f"removed {result['system_logs']:,} log rows ({result['partitions_dropped']} day partitions dropped) "
        f"older than {result['cutoff']}, and {result['cache_entries']:,} expired cache entries"
    )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from datalayer.backup import backup_database_data
    from datalayer.defaults import connection

    progress = Progress()
    try:
        with connection() as db:
            backup_database_data(db, args.file, progress=progress)
    finally:
        progress.done()
    print(f"backup written to {args.file}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from datalayer.backup import restore_database_data
    from datalayer.defaults import connection

    progress = Progress()
    try:
        with connection() as db:
            counts = restore_database_data(db, args.file, progress=progress)
    finally:
        progress.done()
    print("restored: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from datalayer.cache import get_cache_manager

    cache = get_cache_manager()
    if args.action == "flush":
        # The cache never raises for its table layer: a failure shows as a new error in its counters.
        table_errors = cache.stats()["table"]["errors"]
        deleted = cache.flush(args.prefix)
        where = f"{cache.keys.prefix}:{args.prefix or ''}"
        if cache.stats()["table"]["errors"] > table_errors:
            print(
                f"flushed {deleted} Redis keys under {where}; the cache_entries table could not be reached, "
                "so its entries were NOT flushed (see `datalayer health`)",
                file=sys.stderr,
            )
            return 1
        table = " and the matching cache_entries rows" if cache.use_table else ""
        print(f"flushed {deleted} Redis keys under {where}{table}")
        return 0
    stats = cache.stats(probe=True)
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        generation = stats["generation"] if stats["generation"] is not None else "not read yet"
        print(
            f"redis: {stats['redis']['url']} ({'reachable' if stats['redis']['ping'] else 'UNREACHABLE'}), "
            f"breaker {stats['breaker']['state']}, generation {generation}"
        )
        entries = stats["table"].get("entries")
        if not stats["table"].get("enabled", True):
            print("table: not used (the cache runs without its table layer)")
        elif entries is None:
            print("table: UNREACHABLE (cache_entries could not be read; see `datalayer health`)")
        else:
            print(f"table: {entries:,} live entries")
    table_bad = stats["table"].get("enabled", True) and stats["table"].get("entries") is None
    return 0 if stats["redis"]["ping"] and not table_bad else 1


def cmd_roles(args: argparse.Namespace) -> int:
    from datalayer.config import Settings
    from datalayer.defaults import connection
    from datalayer.roles import create_roles

    # from the environment (through Settings), never argv (visible to every user in ps)
    settings = Settings.from_env()
    with connection() as db:
        created = create_roles(
            db,
            app_role=args.app_role,
            readonly_role=args.readonly_role,
            app_password=settings.app_password.value if settings.app_password else None,
            readonly_password=settings.readonly_password.value if settings.readonly_password else None,
            settings=settings,
        )
    for role, new in created.items():
        print(f"{role}: {'created' if new else 'exists'}, privileges granted")
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    from datalayer.project import builtin_migrations_dir, builtin_sql_dir

    # One line and nothing else: it is spliced into shell commands ("$(datalayer path migrations)").
    print(builtin_migrations_dir() if args.what == "migrations" else builtin_sql_dir())
    return 0
