"""The service through HTTP (httpx over ASGI, no socket), on a fresh clone of the migrated template per
test: datalayer's pytest plugin installs the clone as datalayer.aio's default pool (``adl_pool``) and
an empty cache as its ``get_cache_manager()`` (``adl_cache``); ``adb`` looks at the database directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import bcrypt
import httpx
import pytest
from service.app import create_app
from service.tokens import TokenSigner

from datalayer.aio import (
    AsyncCacheManager,
    AsyncConnection,
    AsyncDataLayerPool,
    data_analysis_repo,
    user_repo,
    verify_password,
)

pytestmark = pytest.mark.anyio

SECRET = b"test-secret-of-at-least-32-bytes!!"  # for tests only
PASSWORD = "correct horse battery"  # noqa: S105 - a test user's


@pytest.fixture
async def client(adl_pool: AsyncDataLayerPool, adl_cache: AsyncCacheManager) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(secret=SECRET)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as c:
        yield c


async def sign_up(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """Register ``name`` and log in: the headers of its requests."""
    r = await client.post("/users", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = await client.post("/token", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def new_analysis(client: httpx.AsyncClient, headers: dict[str, str], name: str = "churn") -> dict[str, Any]:
    r = await client.post(
        "/analyses", headers=headers, json={"name": name, "analysis_type": "cohort", "parameters": {"window": 30}}
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_sign_up_stores_an_argon2_hash_and_never_returns_it(
    client: httpx.AsyncClient, adb: AsyncConnection
) -> None:
    r = await client.post("/users", json={"username": "ann", "email": "Ann@Example.com", "password": PASSWORD})
    assert r.status_code == 201
    body = r.json()
    assert body["username"] == "ann"
    assert body["email"] == "Ann@Example.com"
    assert "password" not in r.text
    assert "hash" not in r.text
    stored = await user_repo.get_by_id(adb, body["id"])
    assert stored is not None
    assert stored.hashed_password.startswith("$argon2id$")
    assert await verify_password(PASSWORD, stored.hashed_password)


async def test_sign_up_names_bad_fields_and_taken_ones(client: httpx.AsyncClient) -> None:
    r = await client.post("/users", json={"username": "a", "email": "nope", "password": "short"})
    assert r.status_code == 422
    assert set(r.json()["errors"]) == {"username", "email", "password"}
    await sign_up(client, "ann")
    r = await client.post("/users", json={"username": "ann", "email": "other@example.com", "password": PASSWORD})
    assert (r.status_code, r.json()["field"]) == (409, "username")
    # The same mailbox in other letters is the same account.
    r = await client.post("/users", json={"username": "ann2", "email": "ANN@example.COM", "password": PASSWORD})
    assert (r.status_code, r.json()["field"]) == (409, "email")


async def test_log_in_refuses_wrong_passwords_unknown_users_and_bad_tokens(client: httpx.AsyncClient) -> None:
    headers = await sign_up(client, "ann")
    me = await client.get("/me", headers=headers)
    assert (me.status_code, me.json()["username"]) == (200, "ann")
    for body in (
        {"username": "ann", "password": "wrong password"},
        {"username": "nobody", "password": PASSWORD},
        {"username": "no such name!", "password": PASSWORD},
    ):
        r = await client.post("/token", json=body)
        assert r.status_code == 401, body
        assert r.json()["detail"] == "wrong username or password"
    r = await client.get("/me")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    token = headers["Authorization"].removeprefix("Bearer ")
    user, expires, signature = token.split(".")
    forged = f"{int(user) + 1}.{expires}.{signature}"
    assert (await client.get("/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    expired = TokenSigner(SECRET, ttl=1).issue(int(user), now=0)
    assert (await client.get("/me", headers={"Authorization": f"Bearer {expired}"})).status_code == 401


async def test_a_bcrypt_user_logs_in_and_gets_an_argon2_hash(client: httpx.AsyncClient, adb: AsyncConnection) -> None:
    old = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    user = await user_repo.create(adb, username="legacy", email="legacy@example.com", hashed_password=old)
    r = await client.post("/token", json={"username": "legacy", "password": PASSWORD})
    assert r.status_code == 200
    stored = await user_repo.get_by_id(adb, user.id)
    assert stored is not None
    assert stored.hashed_password.startswith("$argon2id$")


async def test_analyses_are_their_owners_only(client: httpx.AsyncClient) -> None:
    ann, bob = await sign_up(client, "ann"), await sign_up(client, "bob")
    made = await new_analysis(client, ann)
    assert made["status"] == "pending"
    r = await client.get(f"/analyses/{made['id']}", headers=ann)
    assert r.status_code == 200
    assert r.json() | {"files": None} == made | {"files": None}
    assert r.json()["files"] == []
    assert (await client.get(f"/analyses/{made['id']}", headers=bob)).status_code == 404
    assert (await client.get("/analyses/999999", headers=ann)).status_code == 404
    assert (await client.get("/analyses", headers=bob)).json() == {"items": [], "next_cursor": None}
    assert (await client.get(f"/analyses/{made['id']}")).status_code == 401


async def test_bad_analysis_input_is_a_422_naming_the_field(client: httpx.AsyncClient) -> None:
    ann = await sign_up(client, "ann")
    r = await client.post("/analyses", headers=ann, json={"name": "", "analysis_type": "cohort"})
    assert r.status_code == 422
    assert "name" in r.json()["errors"]
    assert (await client.get("/analyses", headers=ann)).json()["items"] == []


async def test_keyset_pages_newest_first(client: httpx.AsyncClient) -> None:
    ann = await sign_up(client, "ann")
    ids = [(await new_analysis(client, ann, f"run {i}"))["id"] for i in range(5)]
    seen: list[int] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    while True:
        r = await client.get("/analyses", headers=ann, params=params)
        assert r.status_code == 200
        page = r.json()
        seen += [a["id"] for a in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["after"] = page["next_cursor"]
    assert seen == ids[::-1]
    assert pages == 3
    r = await client.get("/analyses", headers=ann, params={"after": "not a cursor"})
    assert r.status_code == 422
    assert "after" in r.json()["errors"]
    assert (await client.get("/analyses", headers=ann, params={"limit": 0})).status_code == 422


async def test_files_are_recorded_on_ones_own_analyses_only(client: httpx.AsyncClient) -> None:
    ann, bob = await sign_up(client, "ann"), await sign_up(client, "bob")
    made = await new_analysis(client, ann)
    body = {"filename": "in.csv", "file_type": "csv", "size_bytes": 1024, "storage_uri": "s3://b/in.csv"}
    r = await client.post(f"/analyses/{made['id']}/files", headers=ann, json=body)
    assert r.status_code == 201
    assert r.json()["analysis_id"] == made["id"]
    assert (await client.post(f"/analyses/{made['id']}/files", headers=bob, json=body)).status_code == 404
    r = await client.post(f"/analyses/{made['id']}/files", headers=ann, json=body | {"size_bytes": -1})
    assert r.status_code == 422
    assert "size_bytes" in r.json()["errors"]
    files = (await client.get(f"/analyses/{made['id']}", headers=ann)).json()["files"]
    assert [f["filename"] for f in files] == ["in.csv"]


async def test_stats_are_cached_and_invalidated_by_writes(client: httpx.AsyncClient, adb: AsyncConnection) -> None:
    ann = await sign_up(client, "ann")
    zero = (await client.get("/stats", headers=ann)).json()
    assert zero == {
        "analyses": 0,
        "pending": 0,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "files": 0,
        "total_bytes": 0,
    }
    made = await new_analysis(client, ann)
    assert (await client.get("/stats", headers=ann)).json()["analyses"] == 1  # the create invalidated them
    # Written behind the service's back (no invalidation): the cached stats are what /stats serves.
    ann_id = (await client.get("/me", headers=ann)).json()["id"]
    await data_analysis_repo.create(adb, user_id=ann_id, name="behind", analysis_type="cohort")
    assert (await client.get("/stats", headers=ann)).json()["analyses"] == 1
    body = {"filename": "in.csv", "file_type": "csv", "size_bytes": 2048, "storage_uri": "s3://b/in.csv"}
    assert (await client.post(f"/analyses/{made['id']}/files", headers=ann, json=body)).status_code == 201
    after = (await client.get("/stats", headers=ann)).json()
    assert (after["analyses"], after["pending"], after["files"], after["total_bytes"]) == (2, 2, 1, 2048)


async def test_health_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    r = await client.get("/health/ready")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


async def test_the_app_starts_and_stops_on_the_pool_of_the_test(
    adl_pool: AsyncDataLayerPool, adl_cache: AsyncCacheManager
) -> None:
    app = create_app(secret=SECRET)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as c:
            assert (await c.get("/health/live")).status_code == 200
        assert not adl_pool.closed
    assert adl_pool.closed  # the shutdown closed datalayer.aio's default pool: the one the plugin installed
