"""Runs after every `yoyo apply` that applied something (yoyo's post-apply hook), also when CI calls
plain yoyo, e.g. `yoyo apply --batch --database postgresql+psycopg://… "$(datalayer path migrations)" ./migrations`.

Records the sha256 of the built-in migrations just applied in datalayer_migration_ledger (source
"datalayer"), then verifies that no applied built-in migration file changed since it was applied; a
service's folder does the same for its own with the same one line. yoyo runs this after applying, so a
refusal here comes after the new migrations were applied (they stay recorded): `datalayer migrate`
checks before applying anything. Then creates the system_log day partitions from today to 7 days ahead,
as `datalayer migrate` does (yoyo runs this in one transaction: each day is a savepoint of it). Needs
the datalayer package importable.
"""

import sys

from yoyo import step

from datalayer.migrate import ledger_steps


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


ledger_steps(__file__)
step(_partitions_ahead)
