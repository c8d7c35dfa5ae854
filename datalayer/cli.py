"""The ``datalayer`` command: mirrors the library, adds nothing the library lacks.

Every command ends with a one-line message and a non-zero exit code on failure, never a traceback
(``-v`` shows one for an internal error, with datalayer's DEBUG log).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

import psycopg

from datalayer import _cli_commands as cmd
from datalayer.errors import DataLayerError, QueryError
from datalayer.project import find_project, load_project

__all__ = ["build_parser", "main"]

log = logging.getLogger("datalayer")

# SQLSTATEs that mean the schema is missing or behind: undefined table, column, function.
_NOT_MIGRATED = ("42P01", "42703", "42883")
_MIGRATE_HINT = "is the database migrated? run `datalayer migrate` (or `datalayer status` to see what is applied)"


_JSON_HELP = "print JSON instead of text"
_PROJECT_HELP = (
    "the service's folder (holding its pyproject.toml with [tool.datalayer]); default: DATALAYER_PROJECT "
    "(set but empty counts as unset), else the nearest pyproject.toml from the working directory up"
)


def _days_ahead(text: str) -> int:
    # Checked before anything runs: migrate would otherwise apply migrations and only then refuse N.
    from datalayer.partitions import MAX_AHEAD

    try:
        days = int(text)
    except ValueError:
        days = -1
    if not 0 <= days <= MAX_AHEAD:
        raise argparse.ArgumentTypeError(f"must be a whole number of days from 0 to {MAX_AHEAD}, got {text!r}")
    return days


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``datalayer`` command (every command and argument with its help)."""
    parser = argparse.ArgumentParser(
        prog="datalayer",
        description="SQL-first data layer: migrations, health and maintenance. Settings come from the "
        "environment (DATABASE_URL, REDIS_URL, POOL_SIZE, … see .env.example); with no database setting "
        "an embedded PostgreSQL is used. The project (its SQL and migration folders) comes from "
        "[tool.datalayer] in pyproject.toml: --project DIR, DATALAYER_PROJECT, or the nearest one up from "
        "the working directory. Errors are one line on stderr and a non-zero exit code.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log datalayer's DEBUG messages to stderr (and tracebacks)"
    )
    parser.add_argument("--project", default=None, metavar="DIR", help=_PROJECT_HELP)
    # The same option after the command (`datalayer migrate --project DIR`); SUPPRESS keeps a value given
    # before the command when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=argparse.SUPPRESS, metavar="DIR", help=_PROJECT_HELP)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of these; `datalayer COMMAND --help` explains it"
    )

    def command(name: str, text: str, more: str = "") -> argparse.ArgumentParser:
        description = (text[0].upper() + text[1:] + ". " + more).strip()
        return sub.add_parser(name, help=text, description=description, parents=[common])

    p = command("migrate", "apply pending migrations and create log partitions ahead")
    p.add_argument(
        "--partitions-ahead", type=_days_ahead, default=7, metavar="N", help="days of partitions ahead (default 7)"
    )
    p.set_defaults(func=cmd.cmd_migrate)

    p = command("status", "list migrations: applied, pending, or changed since applied", "Exit 1 on a change.")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.set_defaults(func=cmd.cmd_status)

    p = command("plan", "print the SQL that migrate would run, without running it")
    p.add_argument("--sql", action="store_true", help="print SQL (the default and only format)")
    p.set_defaults(func=cmd.cmd_plan)

    p = command("health", "check connectivity, migrations, partitions and indexes", "Exit 1 when unhealthy.")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.set_defaults(func=cmd.cmd_health)

    p = command(
        "check", "verify every query against a scratch migrated database", "Exit 1 on findings; each names its file."
    )
    p.set_defaults(func=cmd.cmd_check)

    p = command(
        "lint-migrations",
        "run squawk's migration safety rules on the project's migration folders",
        "Exit 1 on problems.",
    )
    p.set_defaults(func=cmd.cmd_lint)

    p = command("demo", "run the end-to-end demo (embedded servers when nothing is configured)")
    p.set_defaults(func=cmd.cmd_demo)

    p = command(
        "stats",
        "exact counts by status and level, table and partition sizes",
        "Table row counts are the planner's estimates (labelled ~); counts by status and level are exact.",
    )
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    p.set_defaults(func=cmd.cmd_stats)

    p = command("cleanup", "drop log partitions older than N days, purge expired cache entries")
    p.add_argument("--days", type=int, default=30, metavar="N", help="keep the last N days of logs (default 30)")
    p.add_argument(
        "--whole-days",
        action="store_true",
        help="keep the cutoff's whole UTC day (drop partitions only, no row-by-row DELETE)",
    )
    p.set_defaults(func=cmd.cmd_cleanup)

    p = command(
        "backup",
        "write every table to FILE from one snapshot (streaming, atomic)",
        "The file is created readable by its owner only (it holds password hashes), written under a random "
        "temporary name next to FILE and renamed into place; an existing FILE is replaced only once the "
        "new one is complete. FILE must not be a symbolic link, directory or pipe.",
    )
    p.add_argument("file", metavar="FILE", help="the backup file to write (e.g. backup.json)")
    p.set_defaults(func=cmd.cmd_backup)

    p = command(
        "restore",
        "load FILE into an empty, migrated database in one transaction",
        "Every section's count and checksum is checked, and compared with the rows PostgreSQL stored; a "
        "damaged file changes nothing. Run `datalayer migrate` on the new database first.",
    )
    p.add_argument("file", metavar="FILE", help="a backup written by `datalayer backup` (a regular file)")
    p.set_defaults(func=cmd.cmd_restore)

    p = command("cache", "the cache: stats, or flush keys under a prefix")
    p.add_argument("action", choices=["stats", "flush"], help="stats: reachability and counters; flush: delete keys")
    p.add_argument("--prefix", default=None, help="flush only keys under CACHE_PREFIX:<prefix> (e.g. user:)")
    p.add_argument("--json", action="store_true", help=_JSON_HELP + " (stats)")
    p.set_defaults(func=cmd.cmd_cache)

    p = command(
        "roles",
        "create the application (DML only) and read-only roles, idempotently",
        "Passwords come from DATALAYER_APP_PASSWORD and DATALAYER_READONLY_PASSWORD, never the command line.",
    )
    p.add_argument("action", choices=["create"], help="create the roles, or grant what is missing")
    p.add_argument("--app-role", default="datalayer_app", help="the application role (default datalayer_app)")
    p.add_argument(
        "--readonly-role", default="datalayer_readonly", help="the read-only role (default datalayer_readonly)"
    )
    p.set_defaults(func=cmd.cmd_roles)

    p = command("reset", "roll back every migration and re-apply: ALL DATA IS LOST")
    p.add_argument("--yes", action="store_true", help="confirm that every table and its data may be dropped")
    p.set_defaults(func=cmd.cmd_reset)

    p = command("partitions", "system_log partitions: list, or create ahead")
    p.add_argument(
        "action", choices=["list", "maintain"], help="list: partitions and sizes; maintain: create missing ones"
    )
    p.add_argument("--ahead", type=_days_ahead, default=7, metavar="N", help="days ahead for maintain (default 7)")
    p.set_defaults(func=cmd.cmd_partitions)

    p = command(
        "path",
        "print the folder of datalayer's built-in migrations or SQL",
        'For CI: yoyo apply "$(datalayer path migrations)" ./migrations. Works from a wheel, an editable '
        "install and a source checkout.",
    )
    p.add_argument("what", choices=["migrations", "sql"], help="migrations: the yoyo folder; sql: named queries")
    p.set_defaults(func=cmd.cmd_path)
    return parser


def _configure_logging(verbose: bool) -> None:
    # datalayer's INFO (e.g. the migrations an embedded server got when it opened) is shown by default,
    # its DEBUG with -v; other libraries stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _describe_settings() -> None:
    from datalayer.config import Settings

    try:
        settings = Settings.from_env()
    except DataLayerError:
        return  # the command reports it
    db = settings.database.display if settings.database else f"embedded (DATALAYER_HOME={settings.home})"
    redis = settings.redis.display if settings.redis else "embedded"
    log.debug("datalayer: database %s; redis %s", db, redis)


def _explain(e: BaseException) -> str:
    from datalayer._translate import describe_error

    if isinstance(e, DataLayerError):
        text = f"{type(e).__name__}: {e}"
        if isinstance(e, QueryError) and e.sqlstate in _NOT_MIGRATED:
            text += f"; {_MIGRATE_HINT}"
        return text
    if isinstance(e, psycopg.OperationalError) and e.sqlstate is None:
        # libpq's connection failures carry no SQLSTATE
        return (
            f"cannot reach the database: {describe_error(e)}; check DATABASE_URL (host, port, database name, user) "
            "and that the server is running"
        )
    if isinstance(e, psycopg.Error):
        text = f"database error: {describe_error(e)}"
        return text + (f"; {_MIGRATE_HINT}" if e.sqlstate in _NOT_MIGRATED else "")
    if isinstance(e, OSError):
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    return f"internal error ({type(e).__name__}: {describe_error(e)}); run with -v for the traceback, and report it"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datalayer`` command."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        # Read for every command, so a wrong --project, DATALAYER_PROJECT or [tool.datalayer] is never ignored.
        project = load_project(args.project) if args.project is not None else find_project()
        args.loaded_project = project
        log.debug(
            "datalayer: project %s (%s)", project.root, "[tool.datalayer]" if project.declared else project.origin()
        )
        _describe_settings()
        log.debug("datalayer: running %s", args.command)
        code: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("datalayer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`datalayer status | head`): nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"datalayer: {_explain(e)}", file=sys.stderr)
        return 1 if isinstance(e, DataLayerError | psycopg.Error | OSError) else 70
    return code


if __name__ == "__main__":
    sys.exit(main())
