"""Bearer tokens: ``<user id>.<expiry>.<signature>``, signed with HMAC-SHA256 under a server secret.

A token is stateless (nothing to store or look up per request) and cannot be forged or altered without
the secret; it expires after ``ttl`` seconds. Rotating SERVICE_SECRET logs everybody out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections.abc import Mapping

from datalayer import ConfigError

__all__ = ["MIN_SECRET_BYTES", "TokenSigner", "secret_from_env"]

MIN_SECRET_BYTES = 32
_VERSION = b"v1"  # part of what is signed: a later format cannot be confused with this one


def secret_from_env(environ: Mapping[str, str] | None = None) -> bytes:
    """SERVICE_SECRET as bytes; ConfigError when it is missing or shorter than 32 bytes."""
    value = (os.environ if environ is None else environ).get("SERVICE_SECRET", "")
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"SERVICE_SECRET must be set to at least {MIN_SECRET_BYTES} random bytes "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))")',
            variable="SERVICE_SECRET",
        )
    return value.encode()


class TokenSigner:
    """Issues and checks the service's bearer tokens."""

    def __init__(self, secret: bytes, *, ttl: int = 3600) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes", variable="SERVICE_SECRET")
        self._secret = secret
        self.ttl = ttl

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._secret, _VERSION + b":" + body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, user_id: int, *, now: float | None = None) -> str:
        """A token for ``user_id`` valid for ``ttl`` seconds from ``now``."""
        expires = int(time.time() if now is None else now) + self.ttl
        body = f"{user_id}.{expires}"
        return f"{body}.{self._sign(body)}"

    def user_id(self, token: str, *, now: float | None = None) -> int | None:
        """The user the token was issued to; None when it is malformed, forged or expired."""
        parts = token.split(".")
        if len(parts) != 3 or not all(p.isascii() for p in parts):
            return None
        user, expires, signature = parts
        if not hmac.compare_digest(self._sign(f"{user}.{expires}"), signature):
            return None
        if not (user.isdigit() and expires.isdigit()):
            return None
        if int(expires) <= (time.time() if now is None else now):
            return None
        return int(user)
