"""Hostile tokens against a real ``bentoml serve`` (RS256): all refused, none logged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.hardening.conftest import PASSWORD, Target, assert_envelope, assert_healthy, login

pytestmark = pytest.mark.slow


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(target: Target, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": target.settings.jwt_issuer,
        "aud": target.settings.jwt_audience,
        "sub": "alice",
        "scopes": ["predict", "explain"],
        "iat": now,
        "exp": now + 300,
        "jti": f"hostile-{now}",
        **changes,
    }
    return {k: v for k, v in claims.items() if v is not None}


def _rs256(target: Target, claims: dict[str, Any], **header: Any) -> str:
    """Signed with the server's real private key and its ``kid`` (unless overridden)."""
    headers = {"kid": target.settings.keys.key_id, **header}
    return jwt.encode(claims, target.private_pem, algorithm="RS256", headers=headers)


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}"
    )


def _hs256_with_public_key(target: Target) -> str:
    """Algorithm confusion: HS256 whose HMAC secret is the server's public key PEM."""
    header = {"alg": "HS256", "typ": "JWT", "kid": target.settings.keys.key_id}
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(target)).encode())}"
    )
    signature = hmac.new(target.public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _tampered(target: Target) -> str:
    """A valid token whose payload was edited (scopes raised to admin) after signing."""
    header, _, signature = _rs256(target, _claims(target, scopes=["predict"])).split(".")
    payload = _b64(json.dumps(_claims(target, scopes=["admin"])).encode())
    return f"{header}.{payload}.{signature}"


def _hostile(target: Target) -> dict[str, str]:
    s = target.settings
    now = int(time.time())
    return {
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, _claims(target)),
        "alg None": _unsigned({"alg": "None", "typ": "JWT"}, _claims(target)),
        "HS256 signed with the public key": _hs256_with_public_key(target),
        "wrong iss": _rs256(target, _claims(target, iss="someone-else")),
        "missing iss": _rs256(target, _claims(target, iss=None)),
        "iss substring": _rs256(target, _claims(target, iss=s.jwt_issuer[:-1])),
        "iss superstring": _rs256(target, _claims(target, iss=s.jwt_issuer + "-evil")),
        "wrong aud": _rs256(target, _claims(target, aud="someone-else")),
        "missing aud": _rs256(target, _claims(target, aud=None)),
        "aud substring": _rs256(target, _claims(target, aud=s.jwt_audience[:-1])),
        "aud superstring": _rs256(target, _claims(target, aud=s.jwt_audience + "x")),
        "UI session audience": _rs256(target, _claims(target, aud=s.ui_session_audience)),
        "expired": _rs256(target, _claims(target, iat=now - 3600, exp=now - 600)),
        "not yet valid (nbf)": _rs256(target, _claims(target, nbf=now + 600)),
        "issued in the future": _rs256(target, _claims(target, iat=now + 600, exp=now + 900)),
        "tampered payload": _tampered(target),
        "unknown kid": _rs256(target, _claims(target), kid="../../../../dev/null"),
        "no kid": jwt.encode(_claims(target), target.private_pem, algorithm="RS256"),
        "truncated signature": _rs256(target, _claims(target))[:-10],
        "garbage": "not-a.jwt.at-all",
    }


@pytest.fixture(scope="module")
def refused(target: Target) -> dict[str, tuple[str, httpx.Response]]:
    """Each hostile token sent to ``/predict``; the answers."""
    body = {"rows": target.model.rows[:1]}
    answers = {}
    with httpx.Client(base_url=target.url, timeout=30) as client:
        for name, token in _hostile(target).items():
            response = client.post(
                "/predict", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            answers[name] = (token, response)
    return answers


def test_every_hostile_token_is_refused_with_401(
    refused: dict[str, tuple[str, httpx.Response]],
) -> None:
    for name, (_, response) in refused.items():
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert_envelope(response, 401, "unauthenticated")


def test_refusals_say_why_without_echoing_the_token(
    refused: dict[str, tuple[str, httpx.Response]],
) -> None:
    reasons = {name: response.json()["error"]["message"] for name, (_, response) in refused.items()}
    assert "algorithm" in reasons["alg none"] and "algorithm" in reasons["alg None"]
    assert "algorithm" in reasons["HS256 signed with the public key"]
    for name in ("wrong iss", "iss substring", "iss superstring"):
        assert "issuer" in reasons[name], (name, reasons[name])
    for name in ("wrong aud", "aud substring", "aud superstring", "UI session audience"):
        assert "audience" in reasons[name], (name, reasons[name])
    assert "'iss'" in reasons["missing iss"] and "'aud'" in reasons["missing aud"]
    assert "expired" in reasons["expired"]
    assert "signature" in reasons["tampered payload"]
    assert "key id" in reasons["unknown kid"] and "key id" in reasons["no kid"]
    for name, (token, response) in refused.items():
        assert token not in response.text, name


def test_a_token_in_the_query_string_is_ignored(target: Target) -> None:
    token = target.token()
    body = {"rows": target.model.rows[:1]}
    for name in ("access_token", "token", "jwt"):
        response = httpx.post(f"{target.url}/predict?{name}={token}", json=body, timeout=30)
        assert_envelope(response, 401, "unauthenticated")
    # The same token in the header works: it was refused for where it was, not what it was.
    response = httpx.post(
        f"{target.url}/predict", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text


def test_the_real_login_issues_an_rs256_token_with_the_servers_kid(target: Target) -> None:
    response = login(target.url)
    assert response.status_code == 200, response.text
    header = jwt.get_unverified_header(response.json()["access_token"])
    assert header["alg"] == "RS256" and header["kid"] == target.settings.keys.key_id


def test_no_token_or_password_reaches_the_log(
    target: Target, refused: dict[str, tuple[str, httpx.Response]]
) -> None:
    # One more of each kind of secret through the log's path: a login and a query token.
    assert login(target.url).status_code == 200
    query_token = target.token()
    httpx.post(f"{target.url}/predict?access_token={query_token}", json={"rows": []})
    time.sleep(0.5)  # let the access log flush
    log = target.log.read_text()
    assert "401" in log or "unauthenticated" in log  # the refusals were logged...
    for name, (token, _) in refused.items():
        signature = token.rsplit(".", 1)[-1]
        assert token not in log, name  # ...but no token, nor its signature
        assert len(signature) < 16 or signature not in log, name
    assert query_token not in log
    assert PASSWORD not in log
    assert_healthy(target)
