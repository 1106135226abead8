"""Baseline: a trivial ASGI app that answers every request with a constant.

Its throughput is the ceiling of the load generator on this machine: a contender
that comes close to it is limited by Locust, not by itself. It drains the request
body (like a real server must) and answers ``/auth/token`` with a constant token,
so the same locustfile runs against it unchanged. ::

    uvicorn load_tests.baselines.constant_app:app --workers 1 --port 3002
"""

from __future__ import annotations

from typing import Any

TOKEN = b'{"access_token":"constant","token_type":"bearer","expires_in":900}'
ANSWER = b'[{"label":0,"probabilities":{"0":1.0,"1":0.0}}]'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The whole app: lifespan, then a constant JSON answer to any HTTP request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    body = TOKEN if scope["path"] == "/auth/token" else ANSWER
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
