"""Least privilege: an application role (DML only) and a read-only role, created idempotently.

Roles are cluster-wide, so they are not created by the per-database migrations (a second database on
the same server would fail to migrate). Run ``datalayer roles create`` once per database, as the role
that ran the migrations, after ``migrate`` (again after a migration that adds tables or columns): it
creates the roles if missing and sets their privileges to exactly these, revoking anything else on
the project's tables (its registry: ``datalayer.registry.resolve_registry``):

* the application role: SELECT/INSERT/UPDATE/DELETE on the tables, except append-only ones (the
  built-in ``system_log``: SELECT/INSERT); USAGE on their sequences; EXECUTE on datalayer's SECURITY
  DEFINER functions, which run as the schema owner and check their own limits: they keep log
  partitions ahead and apply retention without any DDL or DELETE right on ``system_log`` of its own;
* the read-only role: SELECT on the tables, on those with secret columns (the built-in ``users``)
  only on the columns that exist now other than the secret ones, and none on hidden tables (the
  built-in cache tables: copies of whatever the application caches, password hashes included);
* both: SELECT on the migration bookkeeping and the default partitions, so that a readiness
  check (``check_database_health``) works under the role a service runs as.

A SECURITY DEFINER function is only as safe as the schema it lives in: whoever may CREATE there can
plant objects for it to find. ``create_roles`` therefore revokes CREATE on the schema from PUBLIC and
from the two roles, then checks that it took (a REVOKE by a non-owner only warns), and refuses if any
role other than the owner (or a member of it, or a superuser) can still create objects there.

With ``settings`` the two roles also get datalayer's session settings in this database (``ALTER ROLE …
IN DATABASE … SET``: STATEMENT_TIMEOUT, LOCK_TIMEOUT, IDLE_IN_TRANSACTION_TIMEOUT, TimeZone UTC): behind a
transaction pooler, which cannot pass them at connect time, autocommit reads get them from the role.

Passwords are hashed client-side (SCRAM-SHA-256) before they reach the server, so they never appear
in a statement or a server log.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from datalayer._translate import translate
from datalayer.errors import ConfigError, DataLayerError, MigrationError, ValidationError
from datalayer.registry import Registry, resolve_registry

if TYPE_CHECKING:
    from datalayer.config import Settings
    from datalayer.project import Project

__all__ = ["create_roles"]

# What a readiness check reads besides the tables: yoyo's record and the ledger (and default partitions).
HEALTH_TABLES = ("_yoyo_migration", "datalayer_migration_ledger")
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _role(name: object, field: str) -> str:
    if not isinstance(name, str) or not _ROLE.fullmatch(name):
        raise ValidationError({field: "must be a lower-case identifier of at most 63 characters"})
    if name.startswith("pg_"):
        raise ValidationError({field: "must not start with pg_ (PostgreSQL's own roles)"})
    return name


def _refuse_privileged(db: psycopg.Connection[Any], name: str, field: str, anchor: str) -> None:
    """An existing role may become a datalayer role only if it holds nothing more than it would be given:
    granting to a superuser, the tables' owner or the caller would cut their rights or hand them on."""
    row = db.execute(
        "SELECT r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls, "
        "r.rolname = current_user OR r.rolname = session_user "
        "OR pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER') "
        "OR pg_catalog.pg_has_role(r.oid, n.nspowner, 'MEMBER') "
        "FROM pg_catalog.pg_roles r, pg_catalog.pg_class c, pg_catalog.pg_namespace n "
        "WHERE r.rolname = %s AND n.oid = c.relnamespace AND c.oid = pg_catalog.to_regclass("
        "pg_catalog.format('%%I.%%I', pg_catalog.current_schema(), %s::text))",
        (name, anchor),
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


_OWNERS = """
SELECT pg_catalog.current_schema()::text, current_user::text, c.relname::text,
       pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER'), c.relowner::regrole::text
FROM pg_catalog.unnest(%s::text[]) WITH ORDINALITY AS u (t, n)
JOIN pg_catalog.pg_class c
  ON c.oid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', pg_catalog.current_schema(), u.t))
ORDER BY u.n
"""


def _owned(db: psycopg.Connection[Any], registry: Registry) -> list[tuple[str, str, str, bool, str]]:
    return [tuple(r) for r in db.execute(_OWNERS, (list(registry.names),))]


def _schema(db: psycopg.Connection[Any], registry: Registry) -> tuple[str, str]:
    """The schema holding the project's tables (the migrations' current_schema()) and a table of it the
    caller owns (``_grant`` checks that it owns them all, once the schema's CREATE is checked)."""
    rows = _owned(db, registry)
    if not rows:
        raise MigrationError(
            "roles create: the project's tables are not in the current schema; run datalayer migrate first "
            "(with the same DATABASE_URL and search_path)"
        )
    owned = next((r for r in rows if r[3]), None)
    if owned is None:
        owners = ", ".join(sorted({r[4] for r in rows}))
        raise ConfigError(
            f"roles create must run as the owner of the project's tables ({owners}), the role that ran the "
            f"migrations; connected as {rows[0][1]}",
            variable="DATABASE_URL",
        )
    return owned[0], owned[2]


def _require_all_owned(db: psycopg.Connection[Any], registry: Registry) -> None:
    # A GRANT on a table the caller does not own only warns: it would leave the roles silently short.
    other = next((r for r in _owned(db, registry) if not r[3]), None)
    if other is not None:
        raise ConfigError(
            f"roles create must run as the owner of every table of the project; {other[2]} is owned by "
            f"{other[4]}, connected as {other[1]}: run it as {other[4]} or give the tables one owner",
            variable="DATABASE_URL",
        )


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
WHERE n.nspname = %(schema)s
  AND t.oid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', n.nspname, %(anchor)s::text))
"""


def _revoke_create(db: psycopg.Connection[Any], schema: str, roles: sql.Composable, anchor: str) -> None:
    """Revoke CREATE on the schema from PUBLIC and ``roles``; refuse if anyone but the owner keeps it."""
    db.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC, {}").format(sql.Identifier(schema), roles))
    row = db.execute(_CREATORS, {"schema": schema, "anchor": anchor}).fetchone()
    assert row is not None  # _schema found both the schema and the table
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


def _grant(db: psycopg.Connection[Any], schema: str, app: str, ro: str, registry: Registry) -> None:
    s = sql.Identifier(schema)
    both = sql.SQL(", ").join([sql.Identifier(app), sql.Identifier(ro)])

    def tables(names: Any) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(schema, t) for t in names)

    dbname = db.execute("SELECT pg_catalog.current_database()::text").fetchone()
    assert dbname is not None
    present = {
        r[0]
        for r in db.execute(
            "SELECT t FROM pg_catalog.unnest(%s::text[]) AS u (t) "
            "WHERE pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, t)) IS NOT NULL",
            (list(registry.names + HEALTH_TABLES), schema),
        )
    }
    app_tables = [t for t in registry.tables if t.name in present]
    db.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname[0]), both))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, both))
    # From a clean slate, so that privileges granted by an earlier version (UPDATE on system_log,
    # SELECT on users.hashed_password) do not survive.
    db.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(tables(t.name for t in app_tables), both))
    for privileges, chosen in (
        ("SELECT, INSERT, UPDATE, DELETE", [t.name for t in app_tables if not t.append_only]),
        ("SELECT, INSERT", [t.name for t in app_tables if t.append_only]),
    ):
        if chosen:
            db.execute(sql.SQL(f"GRANT {privileges} ON {{}} TO {{}}").format(tables(chosen), sql.Identifier(app)))
    readable = [t.name for t in app_tables if not t.secret_columns and not t.readonly_hidden]
    if readable:
        db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables(readable), sql.Identifier(ro)))
    for table in (t for t in app_tables if t.secret_columns and not t.readonly_hidden):
        columns = db.execute(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = pg_catalog.to_regclass(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped AND a.attname::text <> ALL(%s) ORDER BY a.attnum",
            (sql.Identifier(schema, table.name).as_string(db), list(table.secret_columns)),
        ).fetchall()
        db.execute(
            sql.SQL("GRANT SELECT ({}) ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(c[0]) for c in columns),
                sql.Identifier(schema, table.name),
                sql.Identifier(ro),
            )
        )
    # The sequences the tables' columns own (identity and serial): a serial column's default needs USAGE.
    sequences = db.execute(
        "SELECT DISTINCT q.oid::regclass::text FROM pg_catalog.pg_depend d "
        "JOIN pg_catalog.pg_class q ON q.oid = d.objid AND q.relkind = 'S' "
        "WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass "
        "AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(ARRAY(SELECT pg_catalog.to_regclass("
        "pg_catalog.format('%%I.%%I', %s::text, t)) FROM pg_catalog.unnest(%s::text[]) t)) ORDER BY 1",
        (schema, [t.name for t in app_tables]),
    ).fetchall()
    _grant_views(db, schema, app, ro, registry)
    if sequences:
        # regclass's text is a schema-qualified (when needed), quoted name from the catalog
        seqs = sql.SQL(", ").join(sql.SQL(q[0]) for q in sequences)
        db.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(seqs, both))
        db.execute(sql.SQL("GRANT USAGE, SELECT ON SEQUENCE {} TO {}").format(seqs, sql.Identifier(app)))
    # What a readiness check reads: the migration bookkeeping and each table's default partition.
    health = [t for t in HEALTH_TABLES if t in present] + [
        r[0]
        for r in db.execute(
            "SELECT c.relname::text FROM pg_catalog.pg_inherits i "
            "JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition "
            "AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' "
            "WHERE i.inhparent = ANY(ARRAY(SELECT pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, t)) "
            "FROM pg_catalog.unnest(%s::text[]) t)) ORDER BY 1",
            (schema, [t.name for t in app_tables]),
        )
    ]
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


# The views and materialized views of the schema (not an extension's), each with the relations of the
# schema it reads, through other views too.
_VIEWS = """
WITH RECURSIVE v AS (
    SELECT c.oid, c.relname::text AS name, c.relkind = 'm' AS materialized,
           pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER') AS owned, c.relowner::regrole::text AS owner
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = pg_catalog.to_regnamespace(%(schema)s) AND c.relkind IN ('v', 'm')
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_class'::regclass
                      AND e.objid = c.oid AND e.deptype = 'e')
), reads (view, rel, col) AS (
    SELECT v.oid, d.refobjid, d.refobjsubid FROM v
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> v.oid
    UNION
    SELECT reads.view, d.refobjid, d.refobjsubid FROM reads
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = reads.rel
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> reads.rel
)
SELECT v.name, v.materialized, v.owned, v.owner,
       ARRAY(SELECT DISTINCT c.relname::text FROM reads JOIN pg_catalog.pg_class c ON c.oid = reads.rel
             WHERE reads.view = v.oid AND c.relnamespace = pg_catalog.to_regnamespace(%(schema)s))
FROM v ORDER BY v.name
"""


def _grant_views(db: psycopg.Connection[Any], schema: str, app: str, ro: str, registry: Registry) -> None:
    """Views like the tables they read: the application role may change what an updatable view shows
    (SELECT and INSERT only over an append-only table); the read-only role may read a view unless it
    reads a hidden table or one with secret columns (a view's privileges are checked as its owner, and
    a view over a table names the whole table in the catalog, so which columns it shows cannot be told
    apart). A materialized view: SELECT, for each role as above."""
    views = db.execute(_VIEWS, {"schema": sql.Identifier(schema).as_string(db)}).fetchall()
    other = next((v for v in views if not v[2]), None)
    if other is not None:
        raise ConfigError(
            f"roles create must run as the owner of every view of the project; {other[0]} is owned by "
            f"{other[3]}: run it as {other[3]} or give the views one owner",
            variable="DATABASE_URL",
        )
    facts = {t.name: t for t in registry.tables}
    for name, materialized, _, _, tables in views:
        read = [facts[t] for t in tables if t in facts]
        hidden = any(t.readonly_hidden or t.secret_columns for t in read)
        view = sql.Identifier(schema, name)
        db.execute(sql.SQL("REVOKE ALL ON {} FROM {}, {}").format(view, sql.Identifier(app), sql.Identifier(ro)))
        if materialized:
            app_privileges = "SELECT"
        elif any(t.append_only for t in read):
            app_privileges = "SELECT, INSERT"
        else:
            app_privileges = "SELECT, INSERT, UPDATE, DELETE"
        db.execute(sql.SQL(f"GRANT {app_privileges} ON {{}} TO {{}}").format(view, sql.Identifier(app)))
        if not hidden:
            db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, sql.Identifier(ro)))


def _set_session_defaults(db: psycopg.Connection[Any], roles: tuple[str, ...], settings: Settings) -> None:
    # The values are validated settings; ALTER ROLE takes no bind parameters, so they go in as literals.
    row = db.execute("SELECT pg_catalog.current_database()::text").fetchone()
    dbname = sql.Identifier(row[0] if row else "")
    for role in roles:
        for name, value in settings.session_settings().items():
            db.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(role), dbname, sql.Identifier(name), sql.Literal(value)
                )
            )


def create_roles(
    db: psycopg.Connection[Any],
    *,
    app_role: str = "datalayer_app",
    readonly_role: str = "datalayer_readonly",
    app_password: str | None = None,
    readonly_password: str | None = None,
    registry: Registry | None = None,
    project: Project | None = None,
    settings: Settings | None = None,
) -> dict[str, bool]:
    """Create (if missing) and grant the two roles in the current database; returns {role: created}.

    The grants cover ``registry``'s tables, by default the database's own with the registered facts
    (``datalayer.registry.resolve_registry``; ``project`` defaults to ``find_project()``). Run it as
    the owner of those tables (the role that ran the migrations). All or nothing: it refuses,
    changing nothing, when a role other than the schema's owner can still CREATE in it. With
    ``settings``, both roles get its session settings in this database (``Settings.session_settings()``).
    """
    app = _role(app_role, "app_role")
    ro = _role(readonly_role, "readonly_role")
    if app == ro:
        raise ValidationError({"readonly_role": "must differ from app_role"})
    _check_password(app_password, "app_password")
    _check_password(readonly_password, "readonly_password")
    try:
        with db.transaction():
            reg = resolve_registry(db, registry, project=project)
            schema, anchor = _schema(db, reg)
            _refuse_privileged(db, app, "app_role", anchor)
            _refuse_privileged(db, ro, "readonly_role", anchor)
            created = {app: _ensure_role(db, app, app_password), ro: _ensure_role(db, ro, readonly_password)}
            _revoke_create(db, schema, sql.SQL(", ").join([sql.Identifier(app), sql.Identifier(ro)]), anchor)
            _require_all_owned(db, reg)
            _grant(db, schema, app, ro, reg)
            if settings is not None:
                _set_session_defaults(db, (app, ro), settings)
    except psycopg.Error as e:
        raise translate(e, conn=db) from e
    return created
