"""yoyo runs this after every apply: it verifies and records this folder's files in datalayer's checksum ledger."""

from datalayer.migrate import ledger_steps

ledger_steps(__file__)
