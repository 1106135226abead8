"""Who may call what: the bearer check, the scope check and the OAuth2 token endpoint.

:class:`AuthMiddleware` is pure ASGI: BentoML turns exceptions raised in an API into its
own 401/403 bodies, so the middleware answers auth failures itself, before any route
(mounted apps included) is reached. It serves the OAuth2 password flow at
``POST /auth/token``, behind the login defences of :mod:`tabserve.security.login_guard`
(throttle, concurrency bound), and checks every other request's bearer token, its
revocation and the scope its route needs.

A browser cannot send bearer headers: the paths of a :class:`SessionBackend` given at
construction (the UI's cookie sessions, ``ui/session.py``) are handed to it, with this
middleware's own checks (:meth:`AuthMiddleware.authenticate`, :meth:`~AuthMiddleware.verified`)
to build on. Without one, those paths need a bearer token like any other.

The client address used by the throttle is the request's (``scope["client"]``), which
uvicorn has already taken from ``X-Forwarded-For`` when, and only when, the peer is in
``TABSERVE_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from tabserve.core.errors import (
    ForbiddenError,
    MethodNotAllowedError,
    NotReadyError,
    RequestValidationError,
    UnauthenticatedError,
    UnsupportedMediaTypeError,
)
from tabserve.http.instance import StateProvider
from tabserve.http.requests import (
    SCOPES,
    STATE_STORE,
    SUBJECT,
    TOKEN_ID,
    headers,
    media_type,
    read_form,
    request_state,
)
from tabserve.http.settings import EdgeSettings
from tabserve.security.access import UserValidity
from tabserve.security.login_guard import LoginGuard
from tabserve.security.metrics import auth_metrics
from tabserve.security.passwords import hasher_for
from tabserve.security.revocation import check_not_revoked
from tabserve.security.scopes import UserError, parse_scopes
from tabserve.security.state import StateStore, open_state
from tabserve.security.tokens import Claims, VerifiedTokens, issue_token, unverified_jti
from tabserve.security.users import UserRecord, UserStore

logger = logging.getLogger("tabserve.auth")

TOKEN_PATH = "/auth/token"
# Health, metrics, docs and the token endpoint are open; everything else needs a token.
OPEN_PATHS = frozenset(
    {"/livez", "/healthz", "/readyz", "/metrics", "/", "/docs.json", "/schema.json", TOKEN_PATH}
)
OPEN_PREFIXES = ("/assets/", "/static_content/")
# Routes that need a scope on top of a valid token (``admin`` grants every scope).
ROUTE_SCOPES = {"/predict": "predict", "/explain": "explain", "/feedback": "feedback"}


def is_open_path(path: str) -> bool:
    """Whether ``path`` is served without a token (health, metrics, docs, token)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(scope: dict[str, Any]) -> str:
    """The token of the request's ``Authorization: Bearer`` header.

    Raises:
        UnauthenticatedError: when the header is missing or not a bearer credential.
    """
    value = headers(scope).get("authorization")
    if value is None:
        raise UnauthenticatedError("missing bearer token", error="invalid_request")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class SessionBackend(Protocol):
    """Cookie sessions for a part of the site (the browser UI)."""

    @property
    def prefix(self) -> str:
        """The path prefix of that part (``/ui``)."""

    def handles(self, path: str) -> bool:
        """Whether ``path`` is this backend's (it then answers or passes the request)."""

    async def __call__(
        self, auth: AuthMiddleware, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        """Answer the request, or authenticate it and call ``auth.app``."""


class AuthMiddleware:
    """Pure ASGI middleware: token endpoint, bearer check and scope check.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance (whose settings hold the keys),
            or None before it is ready.
        sessions: cookie sessions for the paths they handle (the UI's), or None.
    """

    def __init__(
        self, app: Any, state: StateProvider, sessions: SessionBackend | None = None
    ) -> None:
        self.app = app
        self.state = state
        self.sessions = sessions
        self._store: StateStore | None = None
        self._guard: LoginGuard | None = None
        self._users: UserStore | None = None
        self._validity: UserValidity | None = None
        self._tokens = VerifiedTokens()  # bearer tokens already verified (see its doc)

    def settings(self) -> EdgeSettings:
        """The worker's settings.

        Raises:
            NotReadyError: before the service instance is loaded.
        """
        serving = self.state()
        if serving is None:
            raise NotReadyError("the service is starting; retry shortly")
        return serving.settings

    def state_store(self, settings: EdgeSettings) -> StateStore:
        """The auth state store (opened in the worker on first use: a Redis client belongs
        to this event loop)."""
        if self._store is None:
            self._store = open_state(settings.state_url, settings.state_max_keys)
            logger.info("auth state (login throttle, revocations): %s", self._store.description)
        return self._store

    def _login_guard(self, settings: EdgeSettings) -> LoginGuard:
        if self._guard is None:
            self._guard = LoginGuard(settings, self.state_store(settings))
        return self._guard

    async def verified(self, settings: EdgeSettings, claims: Claims) -> Claims:
        """``claims`` if their token was not revoked and still stands for its user (not
        removed, password and scopes unchanged since it was issued).

        Raises:
            UnauthenticatedError: revoked or outdated; NotReadyError: the state store is down.
        """
        if self._validity is None:
            self._validity = UserValidity(settings.resolved_users_file)
        reason = self._validity.refusal(claims)
        if reason is not None:
            auth_metrics().revoked()
            raise UnauthenticatedError(f"token no longer valid: {reason} (sign in again)")
        await check_not_revoked(self.state_store(settings), claims)
        return claims

    def admit(self, scope: dict[str, Any], settings: EdgeSettings, claims: Claims) -> None:
        """Record who the request is for, for the layers below (request state)."""
        state = request_state(scope)
        state[SUBJECT] = claims.sub
        state[SCOPES] = claims.scopes
        state[TOKEN_ID] = claims.jti
        state[STATE_STORE] = self.state_store(settings)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == TOKEN_PATH:
            await self._token_endpoint(scope, receive, send)
            return
        if is_open_path(path):
            await self._optional_bearer(scope)
            await self.app(scope, receive, send)
            return
        if self.sessions is not None and self.sessions.handles(path):
            await self.sessions(self, scope, receive, send)
            return
        token = bearer_token(scope)
        settings = self.settings()
        claims = await self.verified(settings, self._tokens.verify(settings, token))
        needed = ROUTE_SCOPES.get(path.rstrip("/") or "/")
        if needed is not None and not claims.allows(needed):
            raise ForbiddenError(f"this route needs the {needed!r} scope", scope=needed)
        request_state(scope)[SUBJECT] = claims.sub
        await self.app(scope, receive, send)

    async def _optional_bearer(self, scope: dict[str, Any]) -> None:
        """On an open path, note who called when a valid bearer token came along (the
        OpenAPI document then shows what only token holders see); a missing or refused
        token changes nothing: the path is open."""
        if "authorization" not in headers(scope) or self.state() is None:
            return
        settings = self.settings()
        try:
            claims = await self.verified(
                settings, self._tokens.verify(settings, bearer_token(scope))
            )
        except (UnauthenticatedError, NotReadyError):
            return
        request_state(scope)[SUBJECT] = claims.sub

    async def authenticate(
        self, settings: EdgeSettings, scope: dict[str, Any], username: str, password: str
    ) -> UserRecord:
        """Check a password against the users file, behind the login guard.

        Raises:
            TooManyRequestsError: when this user and client (or this client) failed too
                often, or (:class:`ServerBusyError`) when no verification slot freed in time.
            InvalidCredentialsError: for an unknown user or a wrong password.
            NotReadyError: when the state store cannot be reached.
        """
        client = (scope.get("client") or ("unknown", 0))[0]
        if self._users is None:  # the file is re-read on every login: edits apply at once
            self._users = UserStore(settings.resolved_users_file, hasher_for(settings))
        users = self._users
        return await self._login_guard(settings).check(
            username, client, lambda: users.authenticate(username, password)
        )

    async def _token_endpoint(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        if scope["method"] != "POST":
            raise MethodNotAllowedError("the token endpoint only accepts POST")
        settings = self.settings()
        if media_type(scope) not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise UnsupportedMediaTypeError(
                "the token endpoint takes an OAuth2 form "
                "(application/x-www-form-urlencoded: username, password)"
            )
        form = await read_form(Request(scope, receive))
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
        record = await self.authenticate(settings, scope, username, password)
        scopes = list(record.scopes)
        if isinstance(fields["scope"], str) and fields["scope"].strip():
            try:
                requested = parse_scopes(fields["scope"])
            except UserError as exc:
                raise RequestValidationError(str(exc)) from None
            scopes = [s for s in scopes if s in requested]
        token, expires_in = issue_token(settings, username, scopes)
        logger.info(
            "issued a token to %r with scopes %s (jti %s)", username, scopes, unverified_jti(token)
        )
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
