"""``POST /feedback``: the ground truth of answered rows, named by the ids their answers
carried.

Body ``{"rows": [{"id": "<an answer's id>", "actual": <class label or number>}]}``, up to
``TABSERVE_MAX_ROWS`` rows, behind the ``feedback`` scope. The answer (200) lists each
row's outcome in order, ``{"rows": [{"id", "outcome", "reason"?}], "counts": {...}}``; a
bad row never makes the others fail. The request as a whole is refused only when it is
not a JSON object with a list of rows (400, 413, 415, 422) or the record is off or down
(503).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tabserve.core.errors import (
    NotReadyError,
    PayloadTooLargeError,
    RecordUnavailableError,
    RequestValidationError,
    ServiceError,
)
from tabserve.http.envelope import error_response
from tabserve.http.requests import require_json
from tabserve.record.store import StoreError
from tabserve.serving.live import OUTCOMES

logger = logging.getLogger("tabserve.record")

FEEDBACK_PATH = "/feedback"


def _rows(document: Any, max_rows: int) -> list[Any]:
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise RequestValidationError(
            'the body is {"rows": [{"id": "<an answer\'s id>", "actual": <the true value>}]}'
        )
    rows: list[Any] = document["rows"]
    if not rows:
        raise RequestValidationError("rows is empty: send at least one")
    if len(rows) > max_rows:
        raise PayloadTooLargeError(f"{len(rows)} rows; at most {max_rows} in one request")
    return rows


def feedback_route(state: Callable[[], Any]) -> Route:
    """The ``POST /feedback`` route; ``state`` gives the worker's loaded service instance."""

    async def feedback(request: Request) -> Response:
        try:
            instance = state()
            if instance is None:
                raise NotReadyError("the model is not loaded yet")
            require_json(dict(request.scope))
            # The prediction APIs' decoder: UTF-8 only, deep nesting a 400, not a crash.
            document = instance.validator.parse_json(await request.body())
            rows = _rows(document, instance.settings.max_rows)
            live = instance.live
            if live is None:
                raise RecordUnavailableError(
                    "the served-rows record is off: the server needs TABSERVE_RECORD_URL "
                    "(sqlite:///path.db or postgresql://...) to take feedback"
                )
            try:
                outcomes = await anyio.to_thread.run_sync(live.feedback, rows)
            except StoreError as exc:
                logger.warning("feedback refused (503): %s", exc)
                raise RecordUnavailableError(
                    "the served-rows record cannot be reached; retry later"
                ) from exc
        except ServiceError as error:
            response: Response = error_response(error)
            return response
        counts = Counter(o.outcome for o in outcomes)
        return JSONResponse(
            {
                "rows": [o.as_dict() for o in outcomes],
                "counts": {outcome: counts.get(outcome, 0) for outcome in OUTCOMES},
            }
        )

    return Route(FEEDBACK_PATH, feedback, methods=["POST"])
