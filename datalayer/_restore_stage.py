"""Restore through a temporary table: for rows of a table partitioned by day (partitions for the days
they hold) and for columns computed in Python (the built-in ``users.email_key``), before the rows go
into their table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from datalayer.errors import BackupError, CommitUnknown, DataLayerError, TransientError
from datalayer.registry import DayPartitions, Table
from datalayer.transactions import transaction

log = logging.getLogger("datalayer")

# Each new partition holds a few locks until COMMIT; older days than this stay in the default partition.
MAX_RESTORE_PARTITION_DAYS = 400


def derived_columns(table: Table, known: list[str]) -> dict[str, tuple[str, Callable[[str], str]]]:
    """Columns of ``table`` (among ``known``) computed in Python from another column of the row."""
    return {c: (d.source, d.compute) for c, d in table.derived.items() if c in known and d.source in known}


def create_stage(
    db: psycopg.Connection[Any], table: str, stage: str, derived: dict[str, tuple[str, Callable[[str], str]]]
) -> None:
    # A temporary table (no WAL) with the table's defaults and CHECK constraints, so that a bad row is
    # still refused by COPY with its line number.
    tmp = sql.SQL("pg_temp.{}").format(sql.Identifier(stage))
    db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tmp))
    db.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) ON COMMIT DROP").format(
            sql.Identifier(stage), sql.Identifier(table)
        )
    )
    for column in derived:
        db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(tmp, sql.Identifier(column)))


def unstage(
    db: psycopg.Connection[Any],
    spec: Table,
    stage: str,
    known: list[str],
    *,
    derived: dict[str, tuple[str, Callable[[str], str]]],
    rows: int,
) -> None:
    table = spec.name
    tmp = sql.SQL("pg_temp.{}").format(sql.Identifier(stage))
    for column, (source, compute) in derived.items():
        _derive(db, table, tmp, column, source=source, compute=compute)
    if spec.day_partitions is not None:
        _partitions_for_rows(db, table, tmp, spec.day_partitions)
    cols = sql.SQL(", ").join(map(sql.Identifier, known))
    cur = db.execute(
        sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
            sql.Identifier(table), cols, cols, tmp
        )
    )
    if cur.rowcount != rows:
        raise BackupError(f"{table}: PostgreSQL stored {cur.rowcount} rows where the backup holds {rows}")
    db.execute(sql.SQL("DROP TABLE {}").format(tmp))


def _derive(
    db: psycopg.Connection[Any],
    table: str,
    tmp: sql.Composable,
    column: str,
    *,
    source: str,
    compute: Callable[[str], str],
) -> None:
    # Computed in Python (the one function that defines the value), streamed back with COPY. A value
    # the backup carries is recomputed too: the column is derived, never trusted from a file.
    keys = sql.Identifier(f"datalayer_restore_{table}_{column}")
    db.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(keys))
    db.execute(
        sql.SQL("CREATE TEMPORARY TABLE {} (id bigint PRIMARY KEY, value text NOT NULL) ON COMMIT DROP").format(keys)
    )
    refused: list[str] = []
    with db.cursor(name="datalayer_restore_derive") as src:
        src.execute(sql.SQL("SELECT id, {} FROM {}").format(sql.Identifier(source), tmp))
        while batch := src.fetchmany(10_000):
            computed = []
            for row_id, value in batch:
                try:
                    computed.append((row_id, compute(value)))
                except DataLayerError as e:
                    refused.append(f"{row_id} ({e})")
            with db.cursor().copy(sql.SQL("COPY pg_temp.{} (id, value) FROM STDIN").format(keys)) as copy:
                for item in computed:
                    copy.write_row(item)
    if refused:
        raise BackupError(
            f"{table}: cannot compute {column} from {source} for id {', '.join(refused[:10])}"
            + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
            + f"; correct {source} in the source database and back it up again"
        )
    db.execute(
        sql.SQL("UPDATE {t} SET {c} = k.value FROM pg_temp.{k} k WHERE {t}.id = k.id").format(
            t=tmp, c=sql.Identifier(column), k=keys
        )
    )
    clashes = db.execute(
        sql.SQL(
            "SELECT array_agg(id ORDER BY id)::text FROM {} GROUP BY {} HAVING count(*) > 1 ORDER BY min(id) LIMIT 10"
        ).format(tmp, sql.Identifier(column))
    ).fetchall()
    if clashes:
        raise BackupError(
            f"{table}: rows share one {column} (ids {'; '.join(r[0] for r in clashes)}): they are one identity "
            f"under this datalayer's rule; merge or change them in the source database and back it up again"
        )
    db.execute(sql.SQL("DROP TABLE pg_temp.{}").format(keys))


def _partitions_for_rows(db: psycopg.Connection[Any], table: str, tmp: sql.Composable, parts: DayPartitions) -> None:
    # Only the days the rows hold, newest first; rows of days left out wait in the default partition,
    # as a day without a partition does for any insert.
    days = [
        r[0]
        for r in db.execute(
            sql.SQL(
                "SELECT DISTINCT ({c} AT TIME ZONE 'UTC')::date AS day FROM {t} "
                "WHERE {c} >= '0001-01-01 00:00:00+00' AND {c} < '9999-12-31 00:00:00+00' "
                "ORDER BY day DESC LIMIT %s"
            ).format(c=sql.Identifier(parts.column), t=tmp),
            (MAX_RESTORE_PARTITION_DAYS + 1,),
        )
    ]
    if len(days) > MAX_RESTORE_PARTITION_DAYS:
        log.warning(
            "datalayer: the restored %s rows span more than %d days; rows before %s stay in its default partition",
            table,
            MAX_RESTORE_PARTITION_DAYS,
            days[MAX_RESTORE_PARTITION_DAYS - 1],
        )
    log.debug("datalayer: the restored %s rows hold %d day(s); ensuring their partitions", table, len(days))
    for day in days[:MAX_RESTORE_PARTITION_DAYS]:
        try:
            with transaction(db):  # a savepoint: a day the function refuses keeps its rows in the default
                parts.ensure(db, day)
        except (TransientError, CommitUnknown):
            raise
        except DataLayerError as e:
            log.warning("datalayer: no %s partition for %s (%s); its rows stay in the default partition", table, day, e)
