"""users.email_key: the identity of an e-mail address, computed in Python, unique and looked up by equality.

Until now the identity was PostgreSQL's lower(email) (the unique index users_email_lower_key), which
follows the collation and disagrees with Python's str.lower() outside ASCII: a user who signed up as
İx@example.com could be found by looking up ix@example.com. The key is datalayer.text.email_key
(IDNA 2008 + UTS #46 for the domain, NFKC + lower() for the local part): it can never be computed
in SQL, so this migration is Python.

Every existing row's key is computed first, under a SHARE lock (reads go on, writes wait). If two
users would share a key, or an address has no key, the migration raises MigrationError listing
the user ids and changes nothing; resolve those accounts and run it again. Then the column is
added and filled, set NOT NULL, indexed UNIQUE, and the old lower(email) index is dropped.

Like post-apply.py, this file needs the datalayer package importable (also under plain `yoyo apply`).

The whole migration is one transaction (yoyo's default), so the unique index cannot be built
CONCURRENTLY: writers to users wait for the build, bounded by the statement_timeout below.
"""

from collections import defaultdict

from yoyo import step

from datalayer.errors import MigrationError, ValidationError
from datalayer.text import email_key

__depends__ = {"0004.harden-definer-functions"}

_LIMITS = ["SET LOCAL lock_timeout = '10s'", "SET LOCAL statement_timeout = '10min'"]


def _keys(conn):  # type: ignore[no-untyped-def]
    """{user id: key} for every row; MigrationError naming the ids of collisions and refused addresses."""
    cur = conn.cursor()
    cur.execute("SELECT id, email FROM users ORDER BY id")
    keys, refused = {}, []
    for user_id, email in cur.fetchall():
        try:
            keys[user_id] = email_key(email)
        except ValidationError as e:
            refused.append(f"user {user_id}: {e.errors.get('email', e)}")
    owners = defaultdict(list)
    for user_id, key in keys.items():
        owners[key].append(user_id)
    collisions = [ids for ids in owners.values() if len(ids) > 1]
    problems = []
    if collisions:
        groups = "; ".join("users " + ", ".join(map(str, ids)) for ids in collisions)
        problems.append(f"these accounts have e-mail addresses that are the same mailbox: {groups}")
    if refused:
        problems.append("these addresses cannot be given a key: " + "; ".join(refused))
    if problems:
        raise MigrationError(
            "0005.users-email-key changed nothing: "
            + "; ".join(problems)
            + "; merge, delete or correct these accounts, then migrate again"
        )
    return keys


def apply(conn):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    for stmt in _LIMITS:
        cur.execute(stmt)
    # SHARE: no row can be written between computing the keys and storing them.
    cur.execute("LOCK TABLE users IN SHARE MODE")
    keys = _keys(conn)
    cur.execute("ALTER TABLE users ADD COLUMN email_key text")
    if keys:
        cur.execute(
            "UPDATE users SET email_key = k.key FROM unnest(%s::bigint[], %s::text[]) AS k(id, key) "
            "WHERE users.id = k.id",
            (list(keys), list(keys.values())),
        )
    cur.execute("ALTER TABLE users ALTER COLUMN email_key SET NOT NULL")
    cur.execute("CREATE UNIQUE INDEX users_email_key_key ON users (email_key)")
    cur.execute("DROP INDEX users_email_lower_key")


def rollback(conn):  # type: ignore[no-untyped-def]
    cur = conn.cursor()
    for stmt in _LIMITS:
        cur.execute(stmt)
    # Fails (and changes nothing) if two addresses now differ by key but not by lower(email).
    cur.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")
    cur.execute("DROP INDEX users_email_key_key")
    cur.execute("ALTER TABLE users DROP COLUMN email_key")


step(apply, rollback)
