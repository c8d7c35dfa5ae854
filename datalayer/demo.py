"""``datalayer demo``: the whole stack once, end to end, on the embedded defaults.

Migrates, creates a user with a real argon2 hash, reads it back by id and e-mail, verifies the
password, prints health, and says where the data lives. Safe to run again (names are unique).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from datalayer.config import Settings
from datalayer.defaults import connection, default_pool, default_target
from datalayer.health import check_database_health
from datalayer.migrate import setup_database
from datalayer.passwords import hash_password, verify_password
from datalayer.repos import users as user_repo

__all__ = ["run_demo"]


def run_demo(echo: Callable[[str], object] = print) -> int:
    """Run the demo; returns a process exit code."""
    settings = Settings.from_env()
    # Migrate before the default pool opens: opening it on an embedded server migrates too, and the
    # demo would then report "up to date" after applying everything.
    applied = setup_database(settings=settings, target=default_target(settings))
    pool = default_pool()
    target = pool.target
    echo(f"database: {target.display}")
    echo(f"migrations: applied {', '.join(applied)}" if applied else "migrations: up to date (none pending)")
    name = f"demo_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with connection(pool) as db:
        user = user_repo.create(db, username=name, email=f"{name}@example.com", hashed_password=hash_password(password))
        echo(f"created: User(id={user.id}, username={user.username!r}, email={user.email!r})")
        again = user_repo.get_by_id(db, user.id)
        by_email = user_repo.get_by_email(db, user.email.upper())
        if again != user or by_email != user:
            raise AssertionError("the record read back differs from the one created")
        verified = verify_password(password, user.hashed_password)
        echo(f"read back by id and by e-mail: equal; password verifies: {verified}")
        echo(f"users in the database: {user_repo.count(db)}")
    health = check_database_health(settings=settings, target=target)
    echo(f"health: {health['status']}")
    for name_, check in health["checks"].items():
        echo(f"  {name_:<18} {'ok ' if check['ok'] else 'BAD'} {check['detail']}")
    if target.embedded:
        echo(f"data lives in {settings.home / 'pgdata'} (embedded PostgreSQL; set DATABASE_URL for your own server)")
    else:
        echo(f"data lives in {target.display}")
    return 0 if health["status"] == "healthy" else 1
