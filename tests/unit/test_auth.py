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

from tabserve.core.config import SettingsError
from tabserve.core.errors import UnauthenticatedError
from tabserve.http.auth import bearer_token, is_open_path
from tabserve.security.tokens import VerifiedTokens, issue_token, verify_session_token, verify_token
from tabserve.serving.settings import Settings
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
        claims,
        key or settings.keys.signing_key,
        algorithm="HS256",
        headers={"kid": settings.keys.key_id},
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
        (lambda s: jwt.encode(_claims(s), s.keys.signing_key, algorithm="HS512"), "algorithm"),
        (lambda s: _sign(s, _claims(s, aud="someone-else")), "audience"),
        (lambda s: _sign(s, _claims(s, iss="evil")), "issuer"),
        (lambda s: _sign(s, _claims(s, jti=None)), "'jti'"),
        (lambda s: _sign(s, _claims(s, scopes=None)), "'scopes'"),
        (lambda s: _sign(s, _claims(s, sub=None)), "'sub'"),
        (lambda s: _sign(s, _claims(s, iat=int(time.time()) + 3600)), "future"),
        (lambda s: _sign(s, _claims(s, scopes="predict")), "list"),
        (lambda s: "not.a.jwt", "malformed"),
        (lambda s: jwt.encode(_claims(s), s.keys.signing_key, "HS256"), "key id"),
        (
            lambda s: jwt.encode(
                _claims(s), s.keys.signing_key, "HS256", headers={"kid": "../../dev/null"}
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


def test_a_remembered_token_is_still_refused_once_expired(settings: Settings) -> None:
    now = [time.time()]
    tokens = VerifiedTokens(clock=lambda: now[0])
    token = _sign(settings, _claims(settings, exp=int(now[0]) + 30))
    assert tokens.verify(settings, token).sub == "alice"
    assert len(tokens) == 1
    now[0] += 30 + settings.jwt_leeway_s - 1  # still inside the leeway, as PyJWT allows
    assert tokens.verify(settings, token).sub == "alice"
    now[0] += 2
    with pytest.raises(UnauthenticatedError, match="expired"):
        tokens.verify(settings, token)
    assert len(tokens) == 0  # forgotten: a later use goes through PyJWT again


def test_refused_tokens_are_never_remembered(settings: Settings) -> None:
    tokens = VerifiedTokens()
    good = _sign(settings, _claims(settings))
    forged = _sign(settings, _claims(settings, sub="mallory"), key="x" * 48)
    for _ in range(2):
        with pytest.raises(UnauthenticatedError, match="signature"):
            tokens.verify(settings, forged)
    assert len(tokens) == 0
    assert tokens.verify(settings, good).sub == "alice"
    assert tokens.verify(settings, good) == verify_token(settings, good)


def test_a_token_remembered_for_one_key_set_is_checked_again_for_another(
    settings: Settings,
) -> None:
    tokens = VerifiedTokens()
    token, _ = issue_token(settings, "alice", ["predict"])
    assert tokens.verify(settings, token).sub == "alice"
    rotated = Settings(jwt_secret=SecretStr(secrets.token_urlsafe(48)))
    with pytest.raises(UnauthenticatedError, match="key id"):
        tokens.verify(rotated, token)


def test_at_most_max_tokens_are_remembered_least_recent_first_out(settings: Settings) -> None:
    tokens = VerifiedTokens(max_tokens=3)
    issued = [_sign(settings, _claims(settings, jti=f"j{i}")) for i in range(4)]
    for token in issued[:3]:
        tokens.verify(settings, token)
    tokens.verify(settings, issued[0])  # used again: now the most recent
    tokens.verify(settings, issued[3])
    assert len(tokens) == 3
    assert list(tokens._tokens) == [issued[2], issued[0], issued[3]]


def test_a_key_rotation_refuses_tokens_of_the_earlier_key(settings: Settings) -> None:
    old_token, _ = issue_token(settings, "alice", ["predict"])
    rotated = Settings(jwt_secret=SecretStr(secrets.token_urlsafe(48)))
    assert rotated.keys.key_id != settings.keys.key_id
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
    assert bearer_token({"headers": [(b"authorization", b"Bearer abc.def.ghi")]}) == "abc.def.ghi"
    with pytest.raises(UnauthenticatedError, match="missing"):
        bearer_token({"headers": []})
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        bearer_token({"headers": [(b"authorization", b"Basic dXNlcjpwdw==")]})


def test_open_paths_are_only_health_metrics_docs_and_token() -> None:
    for path in ("/livez", "/readyz", "/metrics", "/docs.json", "/auth/token", "/assets/x.js"):
        assert is_open_path(path)
    for path in ("/predict", "/explain", "/model", "/ui", "/ui/", "/auth/tokens", "/metrics/x"):
        assert not is_open_path(path)


def test_a_previous_hs256_secret_verifies_while_listed(settings: Settings) -> None:
    old_token, _ = issue_token(settings, "alice", ["predict"])
    new_secret = secrets.token_urlsafe(48)
    overlap = Settings(
        jwt_secret=SecretStr(new_secret), jwt_previous_secrets=[settings.keys.signing_key]
    )
    assert verify_token(overlap, old_token).sub == "alice"
    # New tokens are signed with the current key only, whose kid they carry.
    new_token, _ = issue_token(overlap, "bob", ["predict"])
    assert (
        jwt.get_unverified_header(new_token)["kid"] == overlap.keys.key_id != settings.keys.key_id
    )
    with pytest.raises(UnauthenticatedError, match="key id"):
        verify_token(settings, new_token)  # an old pod does not know the new key yet
    dropped = Settings(jwt_secret=SecretStr(new_secret))
    with pytest.raises(UnauthenticatedError, match="key id"):
        verify_token(dropped, old_token)
    assert verify_token(dropped, new_token).sub == "bob"


def test_previous_secrets_come_from_the_environment_and_are_checked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    monkeypatch.setenv("TABSERVE_JWT_PREVIOUS_SECRETS", f"{first}, {second}")
    loaded = Settings(jwt_secret=SecretStr(secrets.token_urlsafe(48)))
    assert len(loaded.keys.verification_keys) == 3
    assert next(iter(loaded.keys.verification_keys)) == loaded.keys.key_id  # the current key first
    monkeypatch.setenv("TABSERVE_JWT_PREVIOUS_SECRETS", "changeme-changeme-changeme-changeme")
    with pytest.raises(SettingsError, match="placeholder"):
        _ = Settings(jwt_secret=SecretStr(secrets.token_urlsafe(48))).keys.verification_keys


def test_a_token_signed_with_a_key_that_is_not_listed_is_refused_even_with_its_kid(
    settings: Settings,
) -> None:
    # A kid is only a label: a token naming a listed kid but signed with another key fails.
    forged = _sign(settings, _claims(settings), key="another-secret-that-is-long-enough-123456")
    with pytest.raises(UnauthenticatedError, match="signature"):
        verify_token(settings, forged)


def test_previous_rs256_public_keys_verify_while_listed(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_private, old_public = rsa_keys(tmp_path / "old")
    new_private, new_public = rsa_keys(tmp_path / "new")
    old = Settings(
        jwt_algorithm="RS256", jwt_private_key_file=old_private, jwt_public_key_file=old_public
    )
    overlap = Settings(
        jwt_algorithm="RS256",
        jwt_private_key_file=new_private,
        jwt_public_key_file=new_public,
        jwt_previous_public_key_files=[old_public],
    )
    old_token, _ = issue_token(old, "svc", ["predict"])
    assert verify_token(overlap, old_token).sub == "svc"
    dropped = Settings(
        jwt_algorithm="RS256", jwt_private_key_file=new_private, jwt_public_key_file=new_public
    )
    with pytest.raises(UnauthenticatedError, match="key id"):
        verify_token(dropped, old_token)


def test_revoking_a_subject_refuses_its_earlier_tokens_only(settings: Settings) -> None:
    import asyncio

    from tabserve.security.revocation import check_not_revoked, revoke_subject, revoke_token_id
    from tabserve.security.state import MemoryStateStore
    from tabserve.security.tokens import Claims

    store = MemoryStateStore()
    before = verify_token(settings, issue_token(settings, "bob", ["predict"])[0])

    async def run() -> None:
        await check_not_revoked(store, before)  # nothing revoked yet
        await revoke_subject(store, "bob", settings)
        with pytest.raises(UnauthenticatedError, match="revoked"):
            await check_not_revoked(store, before)
        later = Claims("bob", ("predict",), "j-later", before.exp, iat=int(time.time()) + 1)
        await check_not_revoked(store, later)  # issued after: a re-added bob logs in again
        other = Claims("alice", ("predict",), "j-alice", before.exp, iat=before.iat)
        await check_not_revoked(store, other)
        await revoke_token_id(store, "j-alice", ttl_s=60)
        with pytest.raises(UnauthenticatedError, match="revoked"):
            await check_not_revoked(store, other)

    asyncio.run(run())


def test_a_signed_token_living_longer_than_the_maximum_is_refused(settings: Settings) -> None:
    now = int(time.time())
    longest = settings.token_max_ttl_s
    assert verify_token(settings, _sign(settings, _claims(settings, exp=now + longest))).sub
    with pytest.raises(UnauthenticatedError, match="lifetime"):
        verify_token(settings, _sign(settings, _claims(settings, exp=now + 10 * 365 * 86_400)))
    # A browser session may live the session's lifetime at most.
    session = _claims(
        settings, aud=settings.ui_session_audience, exp=now + settings.ui_session_ttl_s + 60
    )
    with pytest.raises(UnauthenticatedError, match="lifetime"):
        verify_session_token(settings, _sign(settings, session))
    with pytest.raises(ValueError, match="TOKEN_MAX_TTL"):
        Settings(jwt_secret=settings.jwt_secret, token_ttl_s=600, token_max_ttl_s=300)
