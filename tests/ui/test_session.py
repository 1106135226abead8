"""The UI's cookie session in the auth middleware, in process (no Gradio, no server).

The middlewares wrap a stand-in app that echoes who it was called for, exactly as
``service.py`` stacks them (envelope outside auth).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr, ValidationError
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from tabserve.http.auth import AuthMiddleware
from tabserve.http.envelope import EnvelopeMiddleware
from tabserve.security.tokens import issue_session_token, issue_token
from tabserve.security.users import UserStore
from tabserve.serving.settings import Settings
from ui.session import SESSION_COOKIE, UISessions

PASSWORD = "correct horse battery"


@dataclass
class _Serving:
    settings: Settings
    model_version: str = "v-test"
    validator: Any = None


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    state = scope.get("state", {})
    body = {"path": scope["path"], "sub": state.get("tabserve_sub")}
    await JSONResponse(body)(scope, receive, send)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("session")
    store = UserStore(root / "users.json")
    store.add("alice", PASSWORD, "predict,explain")
    store.add("eve", PASSWORD, "explain")
    store.add("mallory", PASSWORD, "predict")
    return Settings(
        jwt_secret=SecretStr(secrets.token_urlsafe(48)),
        users_file=store.path,
        login_max_failures=2,
        ui_session_ttl_s=600,
    )


def _app(settings: Settings) -> Any:
    serving = _Serving(settings)
    auth = AuthMiddleware(_echo, state=lambda: serving, sessions=UISessions())
    return EnvelopeMiddleware(auth, state=lambda: serving)


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(_app(settings), follow_redirects=False)  # no lifespan to run


def _csrf(client: TestClient) -> str:
    page = client.get("/ui/login")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def _log_in(client: TestClient, user: str, password: str = PASSWORD) -> Any:
    data = {"username": user, "password": password, "csrf": _csrf(client)}
    return client.post("/ui/login", data=data)


def test_the_login_page_is_a_plain_form_with_a_csrf_cookie(client: TestClient) -> None:
    page = client.get("/ui/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text and 'type="password"' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("tabserve_ui_csrf=") and "HttpOnly" in cookie
    assert "Path=/ui/login" in cookie and "SameSite=strict" in cookie


def test_login_sets_a_short_lived_http_only_session_cookie_for_ui_only(
    client: TestClient, settings: Settings
) -> None:
    response = _log_in(client, "alice")
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
    )
    for attribute in ("HttpOnly", "Path=/ui", "SameSite=strict", "Max-Age=600"):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # plain http in development
    token = client.cookies[SESSION_COOKIE]
    claims = jwt.decode(
        token, settings.keys.signing_key, algorithms=["HS256"], audience="tabserve-ui"
    )
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 600

    assert client.get("/ui/gradio_api/info").json() == {
        "path": "/ui/gradio_api/info",
        "sub": "alice",
    }
    # The cookie is for the UI only: the API stays bearer-only, and the session token
    # is not an API token either.
    refused = client.get("/model", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
    assert refused.status_code == 401
    as_bearer = client.get("/model", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401
    assert as_bearer.json()["error"]["message"] == "token audience not accepted"


def test_logout_clears_the_session_and_revokes_its_token(client: TestClient) -> None:
    _log_in(client, "alice")
    kept = client.cookies[SESSION_COOKIE]  # a copy, as a thief of the cookie would keep
    response = client.get("/ui/logout")
    assert response.status_code == 303 and response.headers["location"] == "/ui/login?msg=logout"
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert client.get("/ui/config").status_code == 401
    replayed = client.get("/ui/config", cookies={SESSION_COOKIE: kept})
    assert replayed.status_code == 401
    assert replayed.json()["error"]["message"] == "token revoked (sign in again)"
    # Logging in again gives a new session that works.
    _log_in(client, "alice")
    assert client.get("/ui/config").status_code == 200


@pytest.mark.parametrize(
    ("user", "password", "with_csrf", "reason"),
    [
        ("alice", PASSWORD, False, "csrf"),
        ("alice", "wrong password", True, "invalid"),
        ("nobody", PASSWORD, True, "invalid"),
        ("eve", PASSWORD, True, "scope"),  # no 'predict' scope: no session
    ],
)
def test_refused_logins_redirect_back_with_a_reason(
    client: TestClient, user: str, password: str, with_csrf: bool, reason: str
) -> None:
    data = {"username": user, "password": password}
    if with_csrf:
        data["csrf"] = _csrf(client)
    response = client.post("/ui/login", data=data)
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/login?msg={reason}"
    assert SESSION_COOKIE not in client.cookies
    assert "Unknown user" in client.get(response.headers["location"]).text or reason != "invalid"


def test_failed_logins_are_throttled_like_the_token_endpoint(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(2):  # login_max_failures=2
        assert _log_in(client, "mallory", "guess-123").headers["location"].endswith("invalid")
    throttled = _log_in(client, "mallory")
    assert throttled.headers["location"] == "/ui/login?msg=throttled"
    assert SESSION_COOKIE not in client.cookies
    # The token endpoint shares the throttle (same user, same client).
    token = client.post("/auth/token", data={"username": "mallory", "password": PASSWORD})
    assert token.status_code == 429
    assert "guess-123" not in caplog.text and PASSWORD not in caplog.text


def test_anonymous_and_expired_sessions(client: TestClient, settings: Settings) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    page = client.get("/ui/", headers=html)
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
    for path in ("/ui", "/ui/config", "/ui/gradio_api/upload", "/ui/gradio_api/file=/etc/passwd"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthenticated"
    expired = issue_session_token(
        settings.model_copy(update={"ui_session_ttl_s": -60}), "alice", ["predict"]
    )[0]
    client.cookies.set(SESSION_COOKIE, expired)
    back = client.get("/ui/", headers=html)
    assert back.status_code == 303 and back.headers["location"] == "/ui/login?msg=expired"
    assert "expired" in client.get("/ui/login?msg=expired").text
    client.cookies.set(SESSION_COOKIE, expired)
    assert client.get("/ui/config").json()["error"]["message"] == "token expired"
    # An API token is not a session, even when sent as the cookie.
    client.cookies.set(SESSION_COOKIE, issue_token(settings, "alice", ["predict"])[0])
    assert client.get("/ui/config").status_code == 401


def test_api_clients_may_use_a_bearer_token_on_the_ui(
    client: TestClient, settings: Settings
) -> None:
    good = issue_token(settings, "alice", ["predict"])[0]
    headers = {"Authorization": f"Bearer {good}"}
    assert client.get("/ui/config", headers=headers).json()["sub"] == "alice"
    narrow = issue_token(settings, "eve", ["explain"])[0]
    response = client.get("/ui/config", headers={"Authorization": f"Bearer {narrow}"})
    assert response.status_code == 403


def test_the_cookies_are_secure_over_https_and_in_production(settings: Settings) -> None:
    over_https = TestClient(_app(settings), base_url="https://testserver", follow_redirects=False)
    response = _log_in(over_https, "alice")
    cookie = next(
        v for v in response.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE)
    )
    assert "Secure" in cookie
    # In production TLS usually ends at a proxy, so the app sees http: still Secure.
    production = settings.model_copy(update={"env": "production"})
    page = TestClient(_app(production), follow_redirects=False).get("/ui/login")
    assert "Secure" in page.headers["set-cookie"]


def test_session_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must differ"):
        Settings(ui_session_audience="tabserve-api")
    assert Settings(max_body_bytes=1 << 20).ui_upload_limit_bytes == 960 * 1024
    small = Settings(max_body_bytes=64 * 1024, ui_max_upload_bytes=1 << 20)
    assert small.ui_upload_limit_bytes == 64 * 1024 - 8 * 1024
