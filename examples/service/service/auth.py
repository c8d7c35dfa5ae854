"""Who is asking: the bearer token of the request, checked by the app's TokenSigner."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.tokens import TokenSigner

__all__ = ["CurrentUser", "current_user_id", "signer_of", "unauthorized"]

# auto_error=False: a missing header is our 401 (with WWW-Authenticate), not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False)


def unauthorized(detail: str) -> HTTPException:
    """A 401 that tells the client to authenticate with a bearer token."""
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def signer_of(request: Request) -> TokenSigner:
    """The app's token signer (set by ``create_app``)."""
    signer: TokenSigner = request.app.state.signer
    return signer


async def current_user_id(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> int:
    """The id of the signed-in user; 401 without a valid, unexpired token."""
    # async def although it awaits nothing: FastAPI runs a plain def dependency in a worker thread,
    # a thread hop per request for one HMAC.
    if credentials is None:
        raise unauthorized("sign in first: POST /token, then send Authorization: Bearer <token>")
    user_id = signer_of(request).user_id(credentials.credentials)
    if user_id is None:
        raise unauthorized("the token is invalid or expired: sign in again (POST /token)")
    return user_id


CurrentUser = Annotated[int, Depends(current_user_id)]
"""The signed-in user's id, for a handler parameter."""
