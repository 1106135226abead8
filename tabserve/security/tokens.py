"""JWT issue and verification.

Tokens are short-lived JWTs carrying ``sub``, ``scopes``, ``iss``, ``aud``, ``exp``,
``iat`` and ``jti``, and a ``kid`` header naming the key (:mod:`tabserve.security.keys`).
Tokens are signed with the current key only; verification pins the algorithm (so
``alg: none`` and algorithm confusion are refused), picks the key by ``kid`` among the
current key and the previous ones still listed (an unknown ``kid`` is refused, never
used to find a key), and requires every one of those claims. Browser sessions are the
same tokens with their own audience and lifetime. Whether a verified token was revoked
is :mod:`tabserve.security.revocation`'s question.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from tabserve.core.errors import UnauthenticatedError
from tabserve.security.scopes import SCOPES, grants, parse_scopes
from tabserve.security.settings import SecuritySettings

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "scopes", "jti")


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token."""

    sub: str
    scopes: tuple[str, ...]
    jti: str
    exp: int
    iat: int = 0

    def allows(self, scope: str) -> bool:
        """Whether the token grants ``scope`` (:func:`~tabserve.security.scopes.grants`)."""
        return grants(self.scopes, scope)


def issue_token(
    settings: SecuritySettings,
    sub: str,
    scopes: Iterable[str],
    ttl_s: int | None = None,
    *,
    audience: str | None = None,
) -> tuple[str, int]:
    """Sign a token for ``sub`` with ``scopes``.

    Args:
        settings: issuer, audience, algorithm and key.
        sub: the subject (user name).
        scopes: granted scopes (validated against the known ones).
        ttl_s: lifetime; ``settings.token_ttl_s`` by default.
        audience: ``aud`` claim; the API's (``settings.jwt_audience``) by default.

    Returns:
        ``(token, expires_in_seconds)``.

    Raises:
        UserError: for an unknown scope.
    """
    ttl = settings.token_ttl_s if ttl_s is None else ttl_s
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience if audience is None else audience,
        "sub": sub,
        "scopes": parse_scopes(list(scopes)),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    keys = settings.keys
    token = jwt.encode(
        claims,
        keys.require_signing_key(),
        algorithm=settings.jwt_algorithm,
        headers={"kid": keys.key_id},
    )
    return token, ttl


def verify_token(
    settings: SecuritySettings,
    token: str,
    *,
    audience: str | None = None,
    max_ttl_s: int | None = None,
) -> Claims:
    """Verify signature, algorithm, every required claim of ``token``, and its lifetime.

    Args:
        settings: issuer, audience, algorithm and key.
        token: the encoded JWT.
        audience: the ``aud`` required; the API's (``settings.jwt_audience``) by default.
        max_ttl_s: the longest lifetime (``exp - iat``) accepted, whatever the signature;
            ``settings.token_max_ttl_s`` by default.

    Raises:
        UnauthenticatedError: with a client-safe reason; never echoes the token.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise UnauthenticatedError("malformed token") from None
    if header.get("alg") != settings.jwt_algorithm:
        raise UnauthenticatedError("token algorithm not accepted")
    key = settings.keys.verification_keys.get(str(header.get("kid")))
    if key is None:
        # Missing, from a rotated-out key, or pointing anywhere else: only ever looked up
        # among the configured keys, never used to find one.
        raise UnauthenticatedError("token key id not accepted (sign in again)")
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience if audience is None else audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "verify_iat": True},
        )
    except jwt.ExpiredSignatureError:
        raise UnauthenticatedError("token expired") from None
    except jwt.InvalidAudienceError:
        raise UnauthenticatedError("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise UnauthenticatedError("token issuer not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise UnauthenticatedError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise UnauthenticatedError("token issued in the future") from None
    except jwt.InvalidSignatureError:
        raise UnauthenticatedError("token signature is invalid") from None
    except jwt.InvalidTokenError:
        raise UnauthenticatedError("invalid token") from None
    scopes = payload["scopes"]
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise UnauthenticatedError("token scopes must be a list of strings")
    if not isinstance(payload["sub"], str) or not payload["sub"]:
        raise UnauthenticatedError("token subject must be a non-empty string")
    longest = settings.token_max_ttl_s if max_ttl_s is None else max_ttl_s
    if int(payload["exp"]) - int(payload["iat"]) > longest:
        # A leaked signing key, or a token minted elsewhere: no token outlives the maximum.
        raise UnauthenticatedError("token lifetime is over the maximum this service accepts")
    return Claims(
        sub=payload["sub"],
        scopes=tuple(s for s in scopes if s in SCOPES),
        jti=str(payload["jti"]),
        exp=int(payload["exp"]),
        iat=int(payload["iat"]),
    )


def issue_session_token(
    settings: SecuritySettings, sub: str, scopes: Iterable[str]
) -> tuple[str, int]:
    """Sign a browser session token for the UI (its own audience and lifetime)."""
    return issue_token(
        settings, sub, scopes, settings.ui_session_ttl_s, audience=settings.ui_session_audience
    )


def verify_session_token(settings: SecuritySettings, token: str) -> Claims:
    """Verify a UI session token (see :func:`verify_token`); API tokens are refused."""
    return verify_token(
        settings, token, audience=settings.ui_session_audience, max_ttl_s=settings.ui_session_ttl_s
    )


def unverified_jti(token: str) -> str:
    """The ``jti`` of a token this service just signed (for the log: not a secret)."""
    return str(jwt.decode(token, options={"verify_signature": False}).get("jti"))


class VerifiedTokens:
    """Bearer tokens whose signature and claims were verified, so that a client's next
    request with the same token skips the JWT decoding and HMAC (PyJWT was about 6 % of
    the CPU per request under load, ``make bench``).

    Only what cannot change is remembered: a token's signature, key, algorithm, issuer,
    audience and claims, checked by :func:`verify_token` on first sight, for the same
    settings object. Expiry is checked again on every use (as PyJWT checks it, with the
    leeway), and revocation is checked by the caller on every request, cached or not. A
    refused token is never remembered. At most ``max_tokens`` are kept, the least
    recently used dropped first, so a flood of distinct valid tokens costs bounded memory
    and only the verification each would cost anyway.
    """

    def __init__(self, max_tokens: int = 4096, clock: Any = time.time) -> None:
        self.max_tokens = max_tokens
        self._clock = clock
        self._tokens: OrderedDict[str, tuple[SecuritySettings, Claims]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tokens)

    def verify(self, settings: SecuritySettings, token: str) -> Claims:
        """:func:`verify_token` for the API's audience, remembered (see the class doc).

        Raises:
            UnauthenticatedError: as :func:`verify_token` does.
        """
        known = self._tokens.get(token)
        if known is not None and known[0] is settings:
            claims = known[1]
            if claims.exp > self._clock() - settings.jwt_leeway_s:
                self._tokens.move_to_end(token)
                return claims
            del self._tokens[token]
            raise UnauthenticatedError("token expired")
        claims = verify_token(settings, token)
        self._tokens[token] = (settings, claims)
        if len(self._tokens) > self.max_tokens:
            self._tokens.popitem(last=False)
        return claims
