"""The edges of HTTP against the real server (tests/hardening/conftest.py): what a client
can make the server keep, log and believe.

- ``/metrics`` series stay bounded whatever paths anonymous clients make up;
- URLs and headers are capped (414, 431) and a slow header sender is cut off (408),
  before anything reaches the app (``tabserve/serving/http_limits.py``);
- what a client sends is escaped and cut before it is logged: no forged log line;
- Gradio believes no forwarding header, grants no foreign origin, and ``/ui`` cannot
  be framed (``ui/edge.py``);
- JSON bodies are UTF-8 only.
"""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.hardening.conftest import Target, assert_envelope, assert_healthy

pytestmark = pytest.mark.slow


def _raw(target: Target, request: bytes, wait_s: float = 5.0) -> bytes:
    """Send ``request`` on a fresh connection, 64 KiB at a time, and return what came back.

    The server answers a request over a limit as soon as it has read past the limit and
    closes the connection; the rest of a multi-MiB request then meets a reset. So the
    answer is read after each chunk, and sending stops once it came.
    """
    parts = urlsplit(target.url)
    received = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        for start in range(0, len(request), 65536):
            try:
                sock.sendall(request[start : start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.2 if start + 65536 < len(request) else wait_s)
            try:
                received += sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if received:
                break
    return received


def _status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body)["error"]


def test_made_up_paths_do_not_add_metrics_series(target: Target) -> None:
    for i in range(60):
        httpx.get(f"{target.url}/made-up-{i}-{time.time_ns()}")
        httpx.get(f"{target.url}/ui/assets/{i}.js")
    metrics = httpx.get(f"{target.url}/metrics").text
    endpoints = set(re.findall(r'bentoml_service_request_total\{endpoint="([^"]*)"', metrics))
    assert "other" in endpoints and "/ui" in endpoints
    assert not any("made-up" in e or e.startswith("/ui/") for e in endpoints), endpoints
    assert len(endpoints) <= 14, endpoints


def test_urls_and_headers_are_capped_before_the_app(target: Target) -> None:
    huge_header = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 << 20) + b"\r\n\r\n"
    status, error = _status_and_error(_raw(target, huge_header))
    assert (status, error["code"]) == (431, "headers_too_large")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(500))
    status, error = _status_and_error(
        _raw(target, b"GET /readyz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    )
    assert (status, error["code"]) == (431, "headers_too_large")
    long_url = b"GET /" + b"a" * (4 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, error = _status_and_error(_raw(target, long_url))
    assert (status, error["code"]) == (414, "uri_too_long")
    assert_healthy(target)


def test_a_slow_header_sender_is_cut_off(target: Target) -> None:
    parts = urlsplit(target.url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = sock.recv(65536)
        assert sock.recv(1) == b""  # then closed
    waited = time.monotonic() - started
    assert b" 408 " in answer.split(b"\r\n")[0]
    assert 1.5 <= waited < 6, waited  # TABSERVE_HEADER_TIMEOUT_S=2
    silent_started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        assert b" 408 " in sock.recv(65536)  # a connection that sends nothing at all
    assert time.monotonic() - silent_started < 6
    assert_healthy(target)


def test_what_a_client_sends_cannot_forge_or_flood_the_log(target: Target) -> None:
    start = len(target.log.read_text())
    forged = "2026-12-07T00:00:00+0000 [INFO] [entry_service:tabserve:1] forged entry"
    path = "/predict%0D%0A" + forged.replace(" ", "%20")
    httpx.post(f"{target.url}{path}", json={"rows": []})
    httpx.post(f"{target.url}/x{'y' * 6000}", json={"rows": []})
    httpx.post(
        f"{target.url}/auth/token", data={"username": "u" * 5000 + "\r\nforged", "password": "p"}
    )
    time.sleep(0.5)
    lines = target.log.read_text()[start:].splitlines()
    assert not any(line.startswith("2026-12-07T00:00:00+0000") for line in lines), lines
    assert any("forged entry" in line and "\\r\\n" in line for line in lines)
    assert max(len(line) for line in lines) < 1500


def test_gradio_believes_no_forwarding_header_and_grants_no_foreign_origin(
    target: Target,
) -> None:
    auth = target.auth()
    spoofed = {**auth, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    config = httpx.get(f"{target.url}/ui/config", headers=spoofed)
    assert config.status_code == 200
    assert "evil.example" not in config.text
    assert config.json().get("root", "").startswith("http://127.0.0.1")
    page = httpx.get(f"{target.url}/ui/", headers=auth)
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    foreign = httpx.get(
        f"{target.url}/ui/config", headers={**auth, "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 200
    assert "evil.example" not in foreign.headers.get("access-control-allow-origin", "")
    call = httpx.post(
        f"{target.url}/ui/gradio_api/run/predict_form",
        json={"data": []},
        headers={**auth, "Origin": "https://evil.example"},
    )
    assert_envelope(call, 403, "cross_origin")
    same = httpx.post(
        f"{target.url}/ui/gradio_api/run/nothing",
        json={"data": []},
        headers={**auth, "Origin": target.url},
    )
    assert same.status_code == 404  # same origin: through to the gate, which knows no event


def test_json_bodies_are_utf8_only(target: Target) -> None:
    body = json.dumps({"rows": target.model.rows[:1]})
    for encoding in ("utf-16", "utf-32"):
        response = httpx.post(
            f"{target.url}/predict",
            content=body.encode(encoding),
            headers={**target.auth(), "Content-Type": "application/json"},
        )
        assert_envelope(response, 400, "malformed_request")


def test_bodies_on_a_kept_alive_connection_are_never_taken_for_headers(target: Target) -> None:
    """A request whose body is larger than the header limits, after others on the same
    connection: the head limit counts the bytes of heads only (a regression seen in the
    soak, where batches after small requests were refused with 431)."""
    rows = target.model.rows
    with httpx.Client(base_url=target.url, headers=target.auth(), timeout=30) as client:
        sizes = (1, 800, 1, 800, 800, 5, 800)
        codes = [
            client.post("/predict", json={"rows": (rows * 10)[:size]}).status_code for size in sizes
        ]
    assert len(json.dumps({"rows": (rows * 10)[:800]})) > 45_000
    assert codes == [200] * len(sizes)
