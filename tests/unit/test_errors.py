"""The error envelope and the mapping of foreign error statuses."""

from __future__ import annotations

import json

import pytest

from tabserve.core.errors import (
    ForbiddenError,
    RequestValidationError,
    TooManyRequestsError,
    UnauthenticatedError,
    envelope,
    envelope_bytes,
    error_for_status,
    is_envelope,
)


def test_envelope_has_code_message_details_and_request_id() -> None:
    error = RequestValidationError("bad rows", details=[{"field": "x", "row": 0}])
    body = envelope(error, "abc123")
    assert body == {
        "error": {
            "code": "validation_error",
            "message": "bad rows",
            "details": [{"field": "x", "row": 0}],
            "request_id": "abc123",
        }
    }
    assert is_envelope(envelope_bytes(error, "abc123"))


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "malformed_request"),
        (401, "unauthenticated"),
        (403, "insufficient_scope"),
        (404, "not_found"),
        (405, "method_not_allowed"),
        (413, "payload_too_large"),
        (415, "unsupported_media_type"),
        (422, "validation_error"),
        (429, "too_many_requests"),
        (500, "internal_error"),
        (503, "not_ready"),
        (418, "client_error"),
        (502, "internal_error"),
    ],
)
def test_foreign_statuses_map_to_typed_errors(status: int, code: str) -> None:
    error = error_for_status(status)
    assert error.status == status
    assert error.code == code
    assert json.loads(envelope_bytes(error))["error"]["code"] == code


def test_auth_errors_carry_their_challenge_headers() -> None:
    assert UnauthenticatedError().headers["WWW-Authenticate"].startswith("Bearer")
    assert 'scope="explain"' in ForbiddenError(scope="explain").headers["WWW-Authenticate"]
    assert TooManyRequestsError(retry_after_s=42).headers["Retry-After"] == "42"


@pytest.mark.parametrize(
    "body", [b"Not Found", b'{"error": "x"}', b'{"detail": "y"}', b"\xff", b'[{"error": {}}]']
)
def test_foreign_bodies_are_not_envelopes(body: bytes) -> None:
    assert not is_envelope(body)


def test_what_a_client_sent_is_escaped_and_cut_before_it_is_logged() -> None:
    from tabserve.core.log_text import printable

    forged = "/predict\r\n2026-12-07T00:00:00+0000 [INFO] [entry_service] forged line"
    assert "\n" not in printable(forged) and "\\r\\n" in printable(forged)
    assert printable("x" * 10_000).endswith("…(+9800 chars)")
    assert len(printable("x" * 10_000)) < 220
    assert printable("ok/path") == "ok/path"
    assert printable("\x1b[31mred\x00") == "\\x1b[31mred\\x00"
