"""Runs after every `yoyo apply` (yoyo's post-apply hook), also when CI calls plain yoyo.

Verifies that no applied migration file changed since it was applied, and records the sha256 of
the ones just applied in datalayer_migration_ledger. Needs the datalayer package importable.
"""

from pathlib import Path

from yoyo import step

from datalayer._ledger import record, verify


def _verify_and_record(conn):  # type: ignore[no-untyped-def]
    directory = Path(__file__).resolve().parent
    verify(conn, directory)
    record(conn, directory)


step(_verify_and_record)
