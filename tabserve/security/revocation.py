"""Revoked tokens: one token (its ``jti``), or every token of a subject issued until a time.

Revocations live in the auth state store (:mod:`tabserve.security.state`): per worker
with ``memory://``, shared by every worker and replica with Redis.
"""

from __future__ import annotations

import logging
import time

from tabserve.core.errors import NotReadyError, UnauthenticatedError
from tabserve.security.metrics import auth_metrics
from tabserve.security.settings import SecuritySettings
from tabserve.security.state import StateStore, StateStoreError
from tabserve.security.tokens import Claims

logger = logging.getLogger("tabserve.auth")

# Kinds of revocation in the state store: one token, or every token of a subject
# issued up to the recorded time.
REVOKED_JTI = "jti"
REVOKED_SUB = "sub"


async def revoke_token_id(store: StateStore, jti: str, ttl_s: int) -> None:
    """Refuse the token ``jti`` from now on; kept ``ttl_s`` seconds (its remaining life)."""
    await store.mark(REVOKED_JTI, jti, max(1, ttl_s))


async def revoke_subject(store: StateStore, sub: str, settings: SecuritySettings) -> None:
    """Refuse every token of ``sub`` issued until now (a removed user), for as long as
    any of them could still be valid."""
    await store.mark(REVOKED_SUB, sub, settings.longest_token_ttl_s, value=time.time())


async def check_not_revoked(store: StateStore, claims: Claims) -> None:
    """Raise if ``claims``' token, or every token of its subject, was revoked.

    Raises:
        UnauthenticatedError: for a revoked token.
        NotReadyError: when the state store cannot be reached (fail closed).
    """
    try:
        token, since = await store.marked_many(
            [(REVOKED_JTI, claims.jti), (REVOKED_SUB, claims.sub)]
        )
    except StateStoreError as exc:
        logger.error("token check refused: %s", exc)
        raise NotReadyError("the token check is unavailable; retry shortly") from None
    if token is not None or (since is not None and claims.iat <= since):
        auth_metrics().revoked()
        raise UnauthenticatedError("token revoked (sign in again)")
