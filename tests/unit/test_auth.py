"""JWT issue/verify: every claim checked, the algorithm pinned; the login throttle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from pydantic import SecretStr

from tabserve.auth import LoginThrottle, bearer_token, is_open_path, issue_token, verify_token
from tabserve.errors import TooManyRequestsError, UnauthenticatedError
from tabserve.settings import Settings
from tests.support import rsa_keys


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Development settings with an inline random secret and files under tmp_path."""
    for key in (
        "TABSERVE_JWT_SECRET",
        "TABSERVE_JWT_SECRET_FILE",
        "TABSERVE_ENV",
        "TABSERVE_USERS_FILE",
        "TABSERVE_JWT_ALGORITHM",
    ):
        monkeypatch.delenv(key, raising=False)
    return Settings(
        jwt_secret=secrets.token_urlsafe(48),
        local_dir=tmp_path / ".tabserve",
    )


def _claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "alice",
        "scopes": ["predict"],
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(settings: Settings, claims: dict[str, Any], key: str | None = None) -> str:
    """HS256 with the current ``kid`` (so only the claim or key under test is wrong)."""
    return jwt.encode(
        claims, key or settings.signing_key, algorithm="HS256", headers={"kid": settings.key_id}
    )


def test_issued_token_verifies_with_its_claims(settings: Settings) -> None:
    token, expires_in = issue_token(settings, "alice", ["explain", "predict"])
    claims = verify_token(settings, token)
    assert claims.sub == "alice"
    assert claims.scopes == ("predict", "explain")
    assert expires_in == settings.token_ttl_s
    assert claims.exp - int(time.time()) <= settings.token_ttl_s
    assert claims.allows("predict") and not claims.allows("admin")


def test_admin_scope_grants_every_scope(settings: Settings) -> None:
    claims = verify_token(settings, issue_token(settings, "root", ["admin"])[0])
    assert claims.allows("predict") and claims.allows("explain")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """HS256 signed with ``key`` (PyJWT rightly refuses a PEM key as an HMAC secret)."""
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{_b64(json.dumps(claims).encode())}"
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none_token(settings: Settings) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(settings)).encode())}."


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda s: _sign(s, _claims(s), key="another-secret-that-is-long-enough-123456"),
            "signature",
        ),
        (
            lambda s: _sign(
                s, _claims(s, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
            ),
            "expired",
        ),
        (_alg_none_token, "algorithm"),
        (lambda s: jwt.encode(_claims(s), s.signing_key, algorithm="HS512"), "algorithm"),
        (lambda s: _sign(s, _claims(s, aud="someone-else")), "audience"),
        (lambda s: _sign(s, _claims(s, iss="evil")), "issuer"),
        (lambda s: _sign(s, _claims(s, jti=None)), "'jti'"),
        (lambda s: _sign(s, _claims(s, scopes=None)), "'scopes'"),
        (lambda s: _sign(s, _claims(s, sub=None)), "'sub'"),
        (lambda s: _sign(s, _claims(s, iat=int(time.time()) + 3600)), "future"),
        (lambda s: _sign(s, _claims(s, scopes="predict")), "list"),
        (lambda s: "not.a.jwt", "malformed"),
        (lambda s: jwt.encode(_claims(s), s.signing_key, "HS256"), "key id"),
        (
            lambda s: jwt.encode(
                _claims(s), s.signing_key, "HS256", headers={"kid": "../../dev/null"}
            ),
            "key id",
        ),
    ],
    ids=[
        "bad-signature",
        "expired",
        "alg-none",
        "alg-hs512",
        "wrong-aud",
        "wrong-iss",
        "no-jti",
        "no-scopes",
        "no-sub",
        "iat-future",
        "scopes-string",
        "garbage",
        "no-kid",
        "unknown-kid",
    ],
)
def test_untrustworthy_tokens_are_refused(settings: Settings, make: Any, reason: str) -> None:
    token = make(settings)
    with pytest.raises(UnauthenticatedError, match=reason) as info:
        verify_token(settings, token)
    assert token not in info.value.message


def test_a_key_rotation_refuses_tokens_of_the_earlier_key(settings: Settings) -> None:
    old_token, _ = issue_token(settings, "alice", ["predict"])
    rotated = Settings(jwt_secret=SecretStr(secrets.token_urlsafe(48)))
    assert rotated.key_id != settings.key_id
    with pytest.raises(UnauthenticatedError, match="key id"):
        verify_token(rotated, old_token)
    assert verify_token(rotated, issue_token(rotated, "alice", ["predict"])[0]).sub == "alice"


def test_small_clock_skew_is_tolerated(settings: Settings) -> None:
    now = int(time.time())
    token = _sign(settings, _claims(settings, iat=now - 100, exp=now - 5))
    assert verify_token(settings, token).sub == "alice"


def test_rs256_with_key_files(tmp_path: Path) -> None:
    private, public = rsa_keys(tmp_path)
    settings = Settings(
        jwt_algorithm="RS256", jwt_private_key_file=private, jwt_public_key_file=public
    )
    token, _ = issue_token(settings, "svc", ["predict"])
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert verify_token(settings, token).sub == "svc"
    # Algorithm confusion: an HS256 token signed with the public key must not pass.
    forged = _hs256_by_hand(_claims(settings), public.read_bytes())
    with pytest.raises(UnauthenticatedError, match="algorithm"):
        verify_token(settings, forged)


def test_bearer_header_parsing() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc.def.ghi")]) == "abc.def.ghi"
    with pytest.raises(UnauthenticatedError, match="missing"):
        bearer_token([])
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        bearer_token([(b"authorization", b"Basic dXNlcjpwdw==")])


def test_open_paths_are_only_health_metrics_docs_and_token() -> None:
    for path in ("/livez", "/readyz", "/metrics", "/docs.json", "/auth/token", "/assets/x.js"):
        assert is_open_path(path)
    for path in ("/predict", "/explain", "/model", "/ui", "/ui/", "/auth/tokens", "/metrics/x"):
        assert not is_open_path(path)


def test_login_throttle_refuses_after_max_failures_then_recovers() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        throttle.check("alice|1.2.3.4")
        throttle.record_failure("alice|1.2.3.4")
    with pytest.raises(TooManyRequestsError) as info:
        throttle.check("alice|1.2.3.4")
    assert info.value.status == 429
    assert 1 <= int(info.value.headers["Retry-After"]) <= 60
    throttle.check("bob|1.2.3.4")  # other keys are unaffected
    now[0] += 61
    throttle.check("alice|1.2.3.4")
