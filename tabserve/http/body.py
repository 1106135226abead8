"""The JSON body of the prediction APIs, checked and validated before BentoML sees it.

:class:`JsonBodyMiddleware` guards ``/predict`` and ``/explain``: content type (415), JSON
syntax (400), row count (413) and the schema (422), so that a bad request never reaches
the adaptive batch it would otherwise fail. The body is parsed once: the validated rows
reach the API through :data:`ValidatedRows`, not through a second parse by BentoML.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Annotated, Any

from pydantic import ValidatorFunctionWrapHandler, WrapValidator

from tabserve.core.errors import NotReadyError
from tabserve.http.instance import StateProvider
from tabserve.http.requests import REQUEST_ID, replayed_body, request_state, require_json

JSON_API_PATHS = frozenset({"/predict", "/explain"})


# The body is parsed once: JsonBodyMiddleware validates it into rows, hands them to the
# API's parameter (ValidatedRows) through this context variable, and replays a stand-in
# body that BentoML parses in no time.
_validated_rows: ContextVar[Sequence[Mapping[str, Any]] | None] = ContextVar(
    "tabserve_validated_rows", default=None
)
HANDED_OFF_BODY = b'{"rows":[]}'


def _handed_off(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    rows = _validated_rows.get()
    if rows is not None and value == []:
        return rows
    return handler(value)


ValidatedRows = Annotated[list[Mapping[str, Any]], WrapValidator(_handed_off)]
"""The type of the prediction APIs' ``rows``: the rows the gateway validated (each a
:class:`~tabserve.core.schema.SchemaRow`: its values in schema order, read as a mapping).

BentoML parses each request body into the API's input model. For ``/predict`` and
``/explain`` the :class:`JsonBodyMiddleware` has already parsed and validated the body
into rows (one pydantic-core pass, :meth:`RequestValidator.validated_rows`); it replays
``{"rows":[]}`` to BentoML, and this validator gives BentoML's model those rows instead of
the empty list, in the same request's context. Anything else (no rows handed off, say a
direct call) is validated as a plain list of objects.
"""


_in_flight = 0
# Set while no prediction is in flight: a shadow model waits on it instead of polling
# (toggled only when the count leaves or reaches zero: never under saturation).
_idle = threading.Event()
_idle.set()


def wait_idle(timeout_s: float) -> bool:
    """Wait until this worker serves no prediction or explanation (at most
    ``timeout_s``); whether it does not (a shadow model scores only then:
    ``tabserve/serving/shadow.py``)."""
    return _idle.wait(timeout_s) and not _in_flight


class JsonBodyMiddleware:
    """Checks and validates the JSON body of the prediction APIs before BentoML sees it.

    Args:
        app: the wrapped ASGI app.
        state: returns the loaded service instance, or None before it is ready.
        paths: the JSON API paths to guard.
    """

    def __init__(
        self, app: Any, state: StateProvider, paths: frozenset[str] = JSON_API_PATHS
    ) -> None:
        self.app = app
        self.state = state
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        global _in_flight
        _in_flight += 1
        if _in_flight == 1:
            _idle.clear()
        try:
            await self._guarded(scope, receive, send)
        finally:
            _in_flight -= 1
            if not _in_flight:
                _idle.set()

    async def _guarded(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        require_json(scope)
        serving = self.state()
        if serving is None:
            raise NotReadyError("the model is not loaded yet")
        body = await _read_body(receive)
        rows = serving.validator.validated_rows(body)
        # Each row's id, the request's id and its index: it rides with the row through
        # adaptive batching into its answer and the served-rows record.
        request_id = request_state(scope).get(REQUEST_ID)
        for index, row in enumerate(rows):
            row.id = f"{request_id}-{index}"  # type: ignore[attr-defined]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length",)] + [
            (b"content-length", str(len(HANDED_OFF_BODY)).encode())
        ]
        replay = replayed_body(HANDED_OFF_BODY, receive)
        token = _validated_rows.set(rows)
        try:
            if not serving.monitor.logging_rows:
                await self.app({**scope, "headers": headers}, replay, send)
                return
            # The inference log: each request's own rows and answers, written once it was
            # answered 200 (adaptive batching merges requests before the API function
            # runs, so this is the one place that knows which rows and answers are whose).
            status = 0
            chunks: list[bytes] = []

            async def keep(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                elif message["type"] == "http.response.body" and status == 200:
                    chunks.append(message.get("body", b""))
                await send(message)

            await self.app({**scope, "headers": headers}, replay, keep)
        finally:
            _validated_rows.reset(token)
        if status == 200:
            serving.monitor.log_rows(
                rows,
                json.loads(b"".join(chunks)),
                request_id=request_id,
                endpoint=scope["path"].strip("/"),
            )


async def _read_body(receive: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
