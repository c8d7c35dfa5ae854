"""Least privilege: an application role (DML only) and a read-only role, created idempotently.

Roles are cluster-wide, so they are not created by the per-database migrations (a second database on
the same server would fail to migrate). Run ``datalayer roles create`` once per database, as the role
that ran the migrations, after ``migrate`` (again after a migration that adds tables or columns): it
creates the roles if missing and sets their privileges to exactly these, revoking anything else on
datalayer's tables:

* the application role: SELECT/INSERT/UPDATE/DELETE on datalayer's tables, except ``system_log``,
  which is append-only (SELECT/INSERT); EXECUTE on the SECURITY DEFINER functions, which run as the
  schema owner and check their own limits: it keeps log partitions ahead and applies retention
  without any DDL or DELETE right on ``system_log`` of its own;
* the read-only role: SELECT on datalayer's tables, on ``users`` only on the columns that exist now
  other than the password hash, and none on the cache tables (copies of whatever the application
  caches, password hashes of cached users included);
* both: SELECT on the migration bookkeeping and the default log partition, so that a readiness
  check (``check_database_health``) works under the role a service runs as.

A SECURITY DEFINER function is only as safe as the schema it lives in: whoever may CREATE there can
plant objects for it to find. ``create_roles`` therefore revokes CREATE on the schema from PUBLIC and
from the two roles, then checks that it took (a REVOKE by a non-owner only warns), and refuses if any
role other than the owner (or a member of it, or a superuser) can still create objects there.

Passwords are hashed client-side (SCRAM-SHA-256) before they reach the server, so they never appear
in a statement or a server log.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from datalayer._translate import translate
from datalayer.errors import ConfigError, DataLayerError, MigrationError, ValidationError

__all__ = ["APPEND_ONLY_TABLES", "APP_TABLES", "READONLY_HIDDEN_TABLES", "SECRET_COLUMNS", "create_roles"]

# Those of an older schema that are missing (cache_invalidations before migration 0006) are skipped.
APP_TABLES = (
    "users",
    "data_analyses",
    "analysis_files",
    "tool_generations",
    "system_log",
    "cache_entries",
    "cache_invalidations",
)
# Written once and never changed by the application: retention deletes through a definer function.
APPEND_ONLY_TABLES = ("system_log",)
# Columns the read-only role may not read; every other column of the table, as it is when the
# roles are (re)granted, is readable.
SECRET_COLUMNS = {"users": ("hashed_password",)}
# Tables the read-only role may not read at all: the cache holds copies of whatever the application
# caches (a cached User record carries its password hash), and its size is in the stats anyway.
READONLY_HIDDEN_TABLES = ("cache_entries", "cache_invalidations")
# What a readiness check reads besides the tables: yoyo's record, the ledger, the default partition.
HEALTH_TABLES = ("_yoyo_migration", "datalayer_migration_ledger", "system_log_default")
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _role(name: object, field: str) -> str:
    if not isinstance(name, str) or not _ROLE.fullmatch(name):
        raise ValidationError({field: "must be a lower-case identifier of at most 63 characters"})
    if name.startswith("pg_"):
        raise ValidationError({field: "must not start with pg_ (PostgreSQL's own roles)"})
    return name


def _refuse_privileged(db: psycopg.Connection[Any], name: str, field: str) -> None:
    """An existing role may become a datalayer role only if it holds nothing more than it would be given:
    granting to a superuser, the tables' owner or the caller would cut their rights or hand them on."""
    row = db.execute(
        "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls, "
        "r.rolname = current_user OR r.rolname = session_user "
        "OR pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER') "
        "OR pg_catalog.pg_has_role(r.oid, n.nspowner, 'MEMBER') "
        "FROM pg_catalog.pg_roles r, pg_catalog.pg_class c, pg_catalog.pg_namespace n "
        "WHERE r.rolname = %s AND n.oid = c.relnamespace AND c.oid = pg_catalog.to_regclass("
        "pg_catalog.format('%%I.system_log', pg_catalog.current_schema()))",
        (name,),
    ).fetchone()
    if row is None:
        return
    powerful, owner = row
    if powerful or owner:
        what = (
            "is a superuser or may create roles, databases or replicate"
            if powerful
            else ("is (or is a member of) the owner of the schema or its tables, or the role running this")
        )
        raise ValidationError({field: f"role {name} already exists and {what}; choose another role name"})


def _ensure_role(db: psycopg.Connection[Any], name: str, password: str | None) -> bool:
    exists = db.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (name,)).fetchone()
    created = False
    if not exists:
        try:
            with db.transaction():  # a savepoint: a concurrent run may create it first
                db.execute(
                    sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(sql.Identifier(name))
                )
            created = True
        except psycopg.errors.DuplicateObject:
            pass
    if password is not None:
        verifier = db.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        db.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(verifier)))
    return created


def _check_password(password: str | None, field: str) -> None:
    if password is not None and (not isinstance(password, str) or not password or "\x00" in password):
        raise ValidationError({field: "must be a non-empty string without NUL characters"})


def _schema(db: psycopg.Connection[Any]) -> str:
    """The schema holding datalayer's tables (the migrations' current_schema()); the caller must own them."""
    row = db.execute(
        "SELECT pg_catalog.current_schema()::text, current_user::text, "
        "pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER'), c.relowner::regrole::text "
        "FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass("
        "pg_catalog.format('%I.system_log', pg_catalog.current_schema()))"
    ).fetchone()
    if row is None:
        raise MigrationError(
            "roles create: datalayer's tables are not in the current schema; run datalayer migrate first "
            "(with the same DATABASE_URL and search_path)"
        )
    schema, user, owns, owner = row
    if not owns:
        raise ConfigError(
            f"roles create must run as the owner of datalayer's tables ({owner}), the role that ran the "
            f"migrations; connected as {user}",
            variable="DATABASE_URL",
        )
    return str(schema)


_CREATORS = """
SELECT (SELECT pg_catalog.bool_or(a.grantee = 0)
        FROM pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
        WHERE a.privilege_type = 'CREATE'),
       ARRAY(
           SELECT r.rolname::text FROM pg_catalog.pg_roles r
           WHERE NOT r.rolsuper
             AND pg_catalog.has_schema_privilege(r.oid, n.oid, 'CREATE')
             AND NOT pg_catalog.pg_has_role(r.oid, n.nspowner, 'MEMBER')
             AND NOT pg_catalog.pg_has_role(r.oid, t.relowner, 'MEMBER')
           ORDER BY 1)
FROM pg_catalog.pg_namespace n, pg_catalog.pg_class t
WHERE n.nspname = %(schema)s AND t.oid = pg_catalog.to_regclass(pg_catalog.format('%%I.system_log', n.nspname))
"""


def _revoke_create(db: psycopg.Connection[Any], schema: str, roles: sql.Composable) -> None:
    """Revoke CREATE on the schema from PUBLIC and ``roles``; refuse if anyone but the owner keeps it."""
    db.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {}").format(sql.Identifier(schema), roles))
    row = db.execute(_CREATORS, {"schema": schema}).fetchone()
    assert row is not None  # _schema found both the schema and system_log
    public, others = bool(row[0]), list(row[1])
    if not public and not others:
        return
    who = (
        "PUBLIC (every role)"
        if public
        else ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
    )
    grantees = "PUBLIC" if public else ", ".join(others)
    raise DataLayerError(
        f'roles create: {who} can still create objects in schema "{schema}", where datalayer\'s SECURITY '
        "DEFINER functions run as its owner, so they could plant code for them; nothing was changed. As the "
        f"schema's owner or a superuser run: REVOKE CREATE ON SCHEMA {sql.Identifier(schema).as_string(db)} "
        f"FROM {grantees}; then run roles create again"
    )


def _grant(db: psycopg.Connection[Any], schema: str, app: str, ro: str) -> None:
    s = sql.Identifier(schema)
    both = sql.SQL(", ").join([sql.Identifier(app), sql.Identifier(ro)])

    def tables(names: Any) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(schema, t) for t in names)

    dbname = db.execute("SELECT pg_catalog.current_database()::text").fetchone()
    assert dbname is not None
    present = [
        r[0]
        for r in db.execute(
            "SELECT t FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS u (t, n) "
            "WHERE pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, t)) IS NOT NULL ORDER BY n",
            (list(APP_TABLES + HEALTH_TABLES), schema),
        )
    ]
    app_tables = [t for t in APP_TABLES if t in present]
    db.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname[0]), both))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, both))
    # From a clean slate, so that privileges granted by an earlier version (UPDATE on system_log,
    # SELECT on users.hashed_password) do not survive.
    db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(tables(app_tables), both))
    mutable = [t for t in app_tables if t not in APPEND_ONLY_TABLES]
    db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(tables(mutable), sql.Identifier(app)))
    db.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(tables(APPEND_ONLY_TABLES), sql.Identifier(app)))
    db.execute(
        sql.SQL("GRANT SELECT ON {} TO {}").format(
            tables(t for t in app_tables if t not in SECRET_COLUMNS and t not in READONLY_HIDDEN_TABLES),
            sql.Identifier(ro),
        )
    )
    for table, secret in SECRET_COLUMNS.items():
        columns = db.execute(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = pg_catalog.to_regclass(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname::text <> ALL(%s) ORDER BY a.attnum",
            (sql.Identifier(schema, table).as_string(db), list(secret)),
        ).fetchall()
        db.execute(
            sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(c[0]) for c in columns),
                sql.Identifier(schema, table),
                sql.Identifier(ro),
            )
        )
    health = [t for t in HEALTH_TABLES if t in present]
    if health:
        db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables(health), both))
    # Every SECURITY DEFINER function datalayer's migrations made (REVOKEd from PUBLIC there).
    definers = db.execute(
        "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
        "WHERE p.pronamespace = pg_catalog.to_regnamespace(%s) AND p.prosecdef "
        "AND p.proname::text LIKE 'datalayer\\_%%' "
        "ORDER BY 1",
        (sql.Identifier(schema).as_string(db),),
    ).fetchall()
    if definers:
        # regprocedure's text is a schema-qualified (when needed), quoted signature from the catalog
        functions = sql.SQL(", ").join(sql.SQL(f[0]) for f in definers)
        db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(functions, sql.Identifier(app)))


def create_roles(
    db: psycopg.Connection[Any],
    *,
    app_role: str = "datalayer_app",
    readonly_role: str = "datalayer_readonly",
    app_password: str | None = None,
    readonly_password: str | None = None,
) -> dict[str, bool]:
    """Create (if missing) and grant the two roles in the current database; returns {role: created}.

    Run it as the owner of datalayer's tables (the role that ran the migrations). All or nothing: it
    refuses, changing nothing, when a role other than the schema's owner can still CREATE in it.
    """
    app = _role(app_role, "app_role")
    ro = _role(readonly_role, "readonly_role")
    if app == ro:
        raise ValidationError({"readonly_role": "must differ from app_role"})
    _check_password(app_password, "app_password")
    _check_password(readonly_password, "readonly_password")
    try:
        with db.transaction():
            schema = _schema(db)
            _refuse_privileged(db, app, "app_role")
            _refuse_privileged(db, ro, "readonly_role")
            created = {app: _ensure_role(db, app, app_password), ro: _ensure_role(db, ro, readonly_password)}
            _revoke_create(db, schema, sql.SQL(", ").join([sql.Identifier(app), sql.Identifier(ro)]))
            _grant(db, schema, app, ro)
    except psycopg.Error as e:
        raise translate(e, conn=db) from e
    return created
