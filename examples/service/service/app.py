"""The HTTP API: sign up and in, one's own analyses (create, list, read), their files, cached stats.

    SERVICE_SECRET=... uvicorn --factory service.app:create_app

Everything goes through datalayer's public async API: ``datalayer.aio`` (the default pool, the
repositories, passwords, the cache) and ``datalayer.fastapi`` (one pooled connection per request,
a unit of work committed before the response, errors mapped to 4xx/5xx, health routes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, status

from datalayer import NotFound, ValidationError, needs_rehash, validate_user_data
from datalayer.aio import (
    analysis_file_repo,
    close_cache_manager,
    close_default_pool,
    connection,
    data_analysis_repo,
    default_pool,
    get_cache_manager,
    hash_password,
    user_repo,
    verify_password,
)
from datalayer.fastapi import AsyncDb, AsyncTx, add_exception_handlers, health_router
from service.auth import CurrentUser, signer_of, unauthorized
from service.schemas import (
    AnalysisIn,
    AnalysisOut,
    AnalysisPage,
    AnalysisWithFilesOut,
    FileIn,
    FileOut,
    Login,
    Registration,
    StatsOut,
    Token,
    UserOut,
)
from service.stats import UserStats, user_stats
from service.telemetry import observe_pool, start_telemetry, stop_telemetry
from service.tokens import TokenSigner, secret_from_env

__all__ = ["STATS_TTL", "create_app", "router"]

STATS_TTL = 60.0  # seconds; writes invalidate the stats at once, the TTL only bounds memory
PAGE_LIMIT = 20

router = APIRouter()
_dummy_hash: str | None = None


async def _hash_to_compare(hashed: str | None) -> str:
    # A login for an unknown user verifies against a real hash anyway, so that it takes as long as a
    # wrong password: the time of the answer does not tell which usernames exist.
    global _dummy_hash
    if hashed is not None:
        return hashed
    if _dummy_hash is None:
        _dummy_hash = await hash_password("not the password of anyone")
    return _dummy_hash


@router.post("/users", status_code=status.HTTP_201_CREATED, tags=["users"])
async def register(body: Registration) -> UserOut:
    """Sign up; 422 names each bad field, 409 says which of username and e-mail is taken."""
    checked = validate_user_data(body.model_dump())
    if not checked["valid"]:
        raise ValidationError(checked["errors"])
    data = checked["data"]
    hashed = await hash_password(data["password"])  # before taking a pool slot: argon2 is slow on purpose
    async with connection() as db:
        user = await user_repo.create(db, username=data["username"], email=data["email"], hashed_password=hashed)
    return UserOut.model_validate(user)


@router.post("/token", tags=["users"])
async def log_in(body: Login, request: Request) -> Token:
    """A bearer token for a username and password; 401 for either being wrong (the same answer)."""
    async with connection() as db:
        try:
            user = await user_repo.get_by_username(db, body.username)
        except ValidationError:  # not a username at all: answered like a wrong one
            user = None
    ok = await verify_password(body.password, await _hash_to_compare(user.hashed_password if user else None))
    if user is None or not ok or not user.is_active:
        raise unauthorized("wrong username or password")
    if needs_rehash(user.hashed_password):  # an old bcrypt hash (or weaker argon2): store a current one
        rehashed = await hash_password(body.password)
        async with connection() as db:
            await user_repo.update(db, user.id, hashed_password=rehashed)
    signer = signer_of(request)
    return Token(access_token=signer.issue(user.id), expires_in=signer.ttl)


@router.get("/me", tags=["users"])
async def me(user_id: CurrentUser, db: AsyncDb) -> UserOut:
    """The signed-in user."""
    user = await user_repo.get_by_id(db, user_id)
    if user is None:
        raise NotFound(f"user {user_id} is gone")
    return UserOut.model_validate(user)


@router.post("/analyses", status_code=status.HTTP_201_CREATED, tags=["analyses"])
async def create_analysis(body: AnalysisIn, user_id: CurrentUser, db: AsyncTx) -> AnalysisOut:
    """A new pending analysis of the signed-in user."""
    analysis = await data_analysis_repo.create(
        db, user_id=user_id, name=body.name, analysis_type=body.analysis_type, parameters=body.parameters
    )
    # Recorded in this transaction, sent after its COMMIT: no reader sees the old stats after the 201.
    await get_cache_manager().invalidate_analysis(analysis.id, user_id=user_id, db=db)
    return AnalysisOut.model_validate(analysis)


@router.get("/analyses", tags=["analyses"])
async def list_analyses(
    user_id: CurrentUser,
    db: AsyncDb,
    limit: Annotated[int, Query()] = PAGE_LIMIT,
    after: Annotated[str | None, Query(description="the next_cursor of the previous page")] = None,
) -> AnalysisPage:
    """The signed-in user's analyses, newest first, one keyset page at a time."""
    page = await data_analysis_repo.find(db, user_id=user_id, limit=limit, after=after)
    return AnalysisPage.model_validate(page)


@router.get("/analyses/{analysis_id}", tags=["analyses"])
async def read_analysis(analysis_id: int, user_id: CurrentUser, db: AsyncDb) -> AnalysisWithFilesOut:
    """One of the signed-in user's analyses with its files; 404 for anyone else's."""
    found = await data_analysis_repo.get_with_files(db, analysis_id, user_id=user_id)
    if found is None:
        raise NotFound(f"analysis {analysis_id}")
    return AnalysisWithFilesOut.model_validate(found)


@router.post("/analyses/{analysis_id}/files", status_code=status.HTTP_201_CREATED, tags=["analyses"])
async def record_file(analysis_id: int, body: FileIn, user_id: CurrentUser, db: AsyncTx) -> FileOut:
    """Record a file of one of the signed-in user's analyses (its metadata: the bytes live elsewhere)."""
    made = await analysis_file_repo.create(
        db,
        analysis_id=analysis_id,
        user_id=user_id,  # NotFound (404) for someone else's analysis
        filename=body.filename,
        file_type=body.file_type,
        size_bytes=body.size_bytes,
        storage_uri=body.storage_uri,
        checksum=body.checksum,
    )
    await get_cache_manager().invalidate_analysis(analysis_id, user_id=user_id, db=db)
    return FileOut.model_validate(made)


@router.get("/stats", tags=["analyses"])
async def stats(user_id: CurrentUser) -> StatsOut:
    """The signed-in user's analyses by status and their files, from the cache (read through on a miss)."""
    cache = get_cache_manager()

    async def load() -> UserStats:
        async with connection() as db:  # a pool slot only on a miss
            return await user_stats(db, user_id)

    found = await cache.get_or_load(cache.keys.user_analyses(user_id), load, UserStats, ttl=STATS_TTL)
    if found is None:  # the loader never returns None; a cached "not found" would be a bug
        raise RuntimeError(f"no stats for user {user_id}")
    return StatsOut.model_validate(found)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await default_pool()  # open it now: a wrong DATABASE_URL fails the start, not the first request
    if app.state.telemetry:
        observe_pool(pool)
    try:
        yield
    finally:
        if app.state.telemetry:
            stop_telemetry()
        await close_cache_manager()
        await close_default_pool()


def create_app(
    *, secret: bytes | None = None, token_ttl: int = 3600, tracer_provider: Any = None, meter_provider: Any = None
) -> FastAPI:
    """The app; ``secret`` signs the bearer tokens (default: SERVICE_SECRET, at least 32 bytes).

    Its queries, pool and cache report to OpenTelemetry when providers are given, or when OpenTelemetry
    is installed and configured by OTEL_* variables (see ``service.telemetry``).
    """
    signer = TokenSigner(secret_from_env() if secret is None else secret, ttl=token_ttl)
    app = FastAPI(title="analyses service (datalayer example)", lifespan=_lifespan)
    app.state.signer = signer
    app.state.telemetry = start_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    add_exception_handlers(app)
    app.include_router(health_router())
    app.include_router(router)
    return app
