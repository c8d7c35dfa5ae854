"""Runs after every `yoyo apply` that applied something (yoyo's post-apply hook), also when CI calls
plain yoyo.

Verifies that no applied migration file changed since it was applied, and records the sha256 of
the ones just applied in datalayer_migration_ledger. Then creates the system_log day partitions
from today to 7 days ahead, as `datalayer migrate` does (yoyo runs this in one transaction: each day
is a savepoint of it). Needs the datalayer package importable.
"""

import sys
from pathlib import Path

from yoyo import step

from datalayer._ledger import record, verify


def _verify_and_record(conn):  # type: ignore[no-untyped-def]
    directory = Path(__file__).resolve().parent
    verify(conn, directory)
    record(conn, directory)


def _partitions_ahead(conn):  # type: ignore[no-untyped-def]
    from datalayer.partitions import DEFAULT_AHEAD, ensure_log_partitions

    try:
        with conn.transaction():  # a savepoint: a failure here leaves the ledger's work intact
            ensure_log_partitions(conn, ahead=DEFAULT_AHEAD)
    except Exception as e:  # the writers of system_log create them too: never fail the deploy for this
        print(
            f"datalayer: could not create system_log partitions ahead ({type(e).__name__}: {e}); "
            "the service's writers create them, or run `datalayer partitions maintain`",
            file=sys.stderr,
        )


step(_verify_and_record)
step(_partitions_ahead)
