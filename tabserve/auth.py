"""JWT issue and verification, the login throttle, and the auth ASGI middleware.

Tokens are short-lived JWTs carrying ``sub``, ``scopes``, ``iss``, ``aud``,
``exp``, ``iat`` and ``jti``. Verification pins the algorithm (so ``alg: none``
and algorithm confusion are refused) and requires every one of those claims.

:class:`AuthMiddleware` is pure ASGI: BentoML turns exceptions raised in an API
into its own 401/403 bodies, so the middleware answers auth failures itself,
before any route (including mounted apps such as ``/ui``) is reached. It also
serves the OAuth2 password flow at ``POST /auth/token``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from tabserve.errors import (
    ForbiddenError,
    InvalidCredentialsError,
    MethodNotAllowedError,
    NotReadyError,
    RequestValidationError,
    TooManyRequestsError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)
from tabserve.gateway import StateProvider
from tabserve.settings import SCOPES, Settings
from tabserve.users import UserError, UserStore, parse_scopes

logger = logging.getLogger("tabserve.auth")

TOKEN_PATH = "/auth/token"
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "scopes", "jti")

# Health, metrics, docs and the token endpoint are open; everything else needs a token.
OPEN_PATHS = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json", TOKEN_PATH}
)
OPEN_PREFIXES = ("/assets/", "/static_content/")
# Routes that need a scope on top of a valid token; ``admin`` grants every scope.
ROUTE_SCOPES = {"/predict": "predict", "/explain": "explain"}
CLIENT_FAILURES_FACTOR = 10


@dataclass(frozen=True)
class Claims:
    """The verified claims of a token."""

    sub: str
    scopes: tuple[str, ...]
    jti: str
    exp: int

    def allows(self, scope: str) -> bool:
        """Whether the token grants ``scope`` (``admin`` grants all)."""
        return scope in self.scopes or "admin" in self.scopes


def issue_token(
    settings: Settings, sub: str, scopes: Iterable[str], ttl_s: int | None = None
) -> tuple[str, int]:
    """Sign a token for ``sub`` with ``scopes``.

    Args:
        settings: issuer, audience, algorithm and key.
        sub: the subject (user name).
        scopes: granted scopes (validated against the known ones).
        ttl_s: lifetime; ``settings.token_ttl_s`` by default.

    Returns:
        ``(token, expires_in_seconds)``.

    Raises:
        UserError: for an unknown scope.
    """
    ttl = settings.token_ttl_s if ttl_s is None else ttl_s
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "scopes": parse_scopes(list(scopes)),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, settings.signing_key, algorithm=settings.jwt_algorithm)
    return token, ttl


def verify_token(settings: Settings, token: str) -> Claims:
    """Verify signature, algorithm and every required claim of ``token``.

    Raises:
        UnauthenticatedError: with a client-safe reason; never echoes the token.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise UnauthenticatedError("malformed token") from None
    if header.get("alg") != settings.jwt_algorithm:
        raise UnauthenticatedError("token algorithm not accepted")
    try:
        payload = jwt.decode(
            token,
            settings.verification_key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
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
    return Claims(
        sub=payload["sub"],
        scopes=tuple(s for s in scopes if s in SCOPES),
        jti=str(payload["jti"]),
        exp=int(payload["exp"]),
    )


class LoginThrottle:
    """Counts failed logins per key in a sliding window and refuses when over the limit.

    In memory, per worker process: a limit of N per worker is at most N x workers
    overall, which still stops online password guessing.

    Args:
        max_failures: failures tolerated in the window.
        window_s: length of the sliding window in seconds.
        clock: time source (seconds).
    """

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.setdefault(key, deque())
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        return stamps

    def check(self, key: str) -> None:
        """Raise if ``key`` has used up its failures.

        Raises:
            TooManyRequestsError: with ``Retry-After`` set to when the oldest failure expires.
        """
        now = self._clock()
        with self._lock:
            stamps = self._recent(key, now)
            if len(stamps) >= self.max_failures:
                retry = math.ceil(stamps[0] + self.window_s - now)
                raise TooManyRequestsError(
                    "too many failed logins; retry later", retry_after_s=retry
                )

    def record_failure(self, key: str) -> None:
        """Count one failed attempt against ``key``."""
        now = self._clock()
        with self._lock:
            self._recent(key, now).append(now)

    def reset(self, key: str) -> None:
        """Forget the failures of ``key`` (after a successful login)."""
        with self._lock:
            self._failures.pop(key, None)


def is_open_path(path: str) -> bool:
    """Whether ``path`` is served without a token (health, metrics, docs, token)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of an ``Authorization: Bearer`` header.

    Raises:
        UnauthenticatedError: when the header is missing or not a bearer credential.
    """
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if not values:
        raise UnauthenticatedError("missing bearer token", error="invalid_request")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class AuthMiddleware:
    """Pure ASGI middleware: token endpoint, bearer check and scope check.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance (whose settings hold the keys),
            or None before it is ready. Reading the settings from the instance keeps
            one Settings object per worker, loaded in the service's ``__init__``, where
            a bad secret fails start-up.
    """

    def __init__(self, app: Any, state: StateProvider) -> None:
        self.app = app
        self.state = state
        self._throttles: tuple[LoginThrottle, LoginThrottle] | None = None
        self._users: UserStore | None = None

    def _settings(self) -> Settings:
        serving = self.state()
        if serving is None:
            raise NotReadyError("the service is starting; retry shortly")
        return serving.settings

    def _throttle(self, settings: Settings) -> tuple[LoginThrottle, LoginThrottle]:
        if self._throttles is None:
            failures, window = settings.login_max_failures, settings.login_window_s
            # Per user name and client, plus a looser per-client limit against a
            # client cycling through user names.
            self._throttles = (
                LoginThrottle(failures, window),
                LoginThrottle(failures * CLIENT_FAILURES_FACTOR, window),
            )
        return self._throttles

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == TOKEN_PATH:
            await self._token_endpoint(scope, receive, send)
            return
        if is_open_path(path):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        claims = verify_token(self._settings(), token)
        needed = ROUTE_SCOPES.get(path.rstrip("/") or "/")
        if needed is not None and not claims.allows(needed):
            raise ForbiddenError(f"this route needs the {needed!r} scope", scope=needed)
        scope.setdefault("state", {})["tabserve_sub"] = claims.sub
        await self.app(scope, receive, send)

    async def _token_endpoint(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        import anyio.to_thread
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        if scope["method"] != "POST":
            raise MethodNotAllowedError("the token endpoint only accepts POST")
        settings = self._settings()
        user_throttle, client_throttle = self._throttle(settings)
        request = Request(scope, receive)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise UnsupportedMediaTypeError(
                "the token endpoint takes an OAuth2 form "
                "(application/x-www-form-urlencoded: username, password)"
            )
        form = await request.form()
        fields = {k: form.get(k) for k in ("grant_type", "username", "password", "scope")}
        missing = [k for k in ("username", "password") if not isinstance(fields[k], str)]
        if missing:
            raise RequestValidationError(
                "username and password are required",
                details=[{"field": k, "message": "field required"} for k in missing],
            )
        if fields["grant_type"] not in (None, "password"):
            raise RequestValidationError(
                "only the password grant is supported",
                details=[{"field": "grant_type", "message": "must be 'password'"}],
            )
        username, password = str(fields["username"]), str(fields["password"])
        client = (scope.get("client") or ("unknown", 0))[0]
        user_key = f"{username.lower()}|{client}"
        user_throttle.check(user_key)
        client_throttle.check(client)
        if self._users is None:  # the file is re-read on every login: edits apply at once
            self._users = UserStore(settings.resolved_users_file)
        record = await anyio.to_thread.run_sync(self._users.authenticate, username, password)
        if record is None:
            user_throttle.record_failure(user_key)
            client_throttle.record_failure(client)
            logger.warning("failed login for user %r from %s", username, client)
            raise InvalidCredentialsError()
        user_throttle.reset(user_key)
        scopes = list(record.scopes)
        if isinstance(fields["scope"], str) and fields["scope"].strip():
            try:
                requested = parse_scopes(fields["scope"])
            except UserError as exc:
                raise RequestValidationError(str(exc)) from None
            scopes = [s for s in scopes if s in requested]
        token, expires_in = issue_token(settings, username, scopes)
        logger.info("issued a token to %r with scopes %s", username, scopes)
        response = JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": " ".join(scopes),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )
        await response(scope, receive, send)


__all__ = [
    "OPEN_PATHS",
    "ROUTE_SCOPES",
    "TOKEN_PATH",
    "AuthMiddleware",
    "Claims",
    "LoginThrottle",
    "bearer_token",
    "is_open_path",
    "issue_token",
    "verify_token",
]
