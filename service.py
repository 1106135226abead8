"""The tabserve BentoML service: wiring only.

Loads the champion model that the pipeline imported into the BentoML model store
(``TABSERVE_MODEL_TAG``, default ``tabserve:latest``) and serves it. The logic
lives in ``tabserve/``: validation, prediction, auth, errors and metrics. The browser
UI (``ui/``, Gradio) is mounted at ``/ui`` and calls the same predictor in process.

Run with ``bentoml serve service:Tabserve``.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, cast

import bentoml
import pydantic_core
from bentoml import get_current_service
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import PlainSerializer, SkipValidation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tabserve.auth import AuthMiddleware
from tabserve.core.bundle import BundleIntegrityError, read_reference
from tabserve.core.errors import NotReadyError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import RequestValidator
from tabserve.http.envelope import (
    EnvelopeMiddleware,
    JsonBodyMiddleware,
    ValidatedRows,
    error_response,
)
from tabserve.http.openapi import OpenAPIMiddleware
from tabserve.security.state import MEMORY_URL
from tabserve.serving import bentoml_fixes
from tabserve.serving.heap import freeze_startup_heap
from tabserve.serving.logs import configure_logging
from tabserve.serving.metrics import ready_gauge, service_metrics
from tabserve.serving.monitor import Monitor
from tabserve.serving.tracing import apply_tracing_default
from tabserve.settings import (
    SettingsError,
    check_startup,
    load_batching_settings,
    load_server_settings,
    load_settings,
    model_tag_from_env,
)
from ui.mount import create_ui_app

logger = logging.getLogger("tabserve.service")
# Read and checked on import, in every process of `bentoml serve`:
# - BentoML sets up logging before it imports this module; switching the format here
#   (TABSERVE_LOG_FORMAT) covers the supervisor's lines too, which no worker reaches;
# - BentoML fixes the batching knobs, the workers and its access log in the decorators
#   below (TABSERVE_BATCH_*, TABSERVE_WORKERS, TABSERVE_ACCESS_LOG,
#   TABSERVE_TRUSTED_PROXIES: env only);
# - BentoML's supervisor restarts a worker whose start-up fails, forever: an invalid
#   setting or a missing, short, unreadable or invalid secret or users file must stop
#   `bentoml serve` itself, with the fix in the message and no stack trace.
try:
    _settings = load_settings()
    configure_logging(_settings.log_format)
    for _warning in check_startup(_settings):
        logger.warning("%s", _warning)
    BATCHING = load_batching_settings()
    SERVER = load_server_settings()
except SettingsError as _error:
    raise SystemExit(f"tabserve cannot start: {_error}") from None


def _answers_json(answers: list[dict[str, Any]]) -> bytes:
    """The answers as JSON in one pydantic-core pass (NaN as null, as BentoML writes it)."""
    return pydantic_core.to_json(answers, inf_nan_mode="null")


# The answers, as BentoML sends them. Declared, the media type is not derived again from a
# JSON schema that BentoML rebuilds for every response (5 % of the CPU per request under
# load). The predictor built them: BentoML does not validate them again, and writes the
# bytes `_answers_json` gives instead of dumping them twice into Python's json (a 12-row,
# 10-class answer: 100 to 30 us).
Answers = Annotated[
    list[dict[str, Any]],
    SkipValidation,
    PlainSerializer(_answers_json, return_type=bytes),
    ContentType("application/json"),
]
# uvicorn reads its trusted proxies when each worker starts, after importing this module.
if (_replaced := SERVER.apply_trusted_proxies()) is not None:
    logger.warning(_replaced)
# BentoML's request timeout keeps every finished request in memory for the whole
# timeout, its batching wait outlives the load, and it rebuilds each API's caller on
# every request; the fixes must be in place before BentoML builds the app
# (tabserve/serving/bentoml_fixes.py).
bentoml_fixes.apply()
bentoml_fixes.cap_batch_wait(BATCHING.batch_max_wait_ms)
bentoml_fixes.cache_api_callers()


def serving_instance() -> Tabserve | None:
    """The loaded service instance of this worker; None before it is ready or if its
    model was refused (integrity check failed).

    Every middleware asks for it on every request (five times a request): the function is
    imported once, since ``bentoml.get_current_service`` resolves through BentoML's lazy
    module ``__getattr__`` (an import lookup, 4.5 us a call against 0.1 us).
    """
    try:
        instance = get_current_service()
    except BentoMLException:
        return None
    if not isinstance(instance, SERVICE.inner) or instance.refused is not None:
        return None
    return instance


async def model_card(_: Request) -> JSONResponse:
    """``GET /model``: the model card (version, lineage, metrics, params, schema)."""
    instance = serving_instance()
    if instance is None:
        return error_response(NotReadyError("the model is not loaded yet"))
    return JSONResponse(instance.predictor.card().as_dict())


card_app = Starlette(routes=[Route("/model", model_card, methods=["GET"])])
# The Gradio UI under /ui, built from the loaded model when a worker starts.
ui_app = create_ui_app(serving_instance)


@bentoml.asgi_app(ui_app, path="/", name="ui")
@bentoml.asgi_app(card_app, path="/")
@bentoml.service(
    name="tabserve",
    traffic={"timeout": 60},
    workers=SERVER.workers,
    logging={"access": {"enabled": SERVER.access_log == "all"}},
)
class Tabserve:
    """Predictions, explanations and the model card of the served champion."""

    model_ref = bentoml.models.BentoModel(model_tag_from_env())

    def __init__(self) -> None:
        self.settings = load_settings()
        logging.getLogger("tabserve").setLevel(self.settings.log_level)
        _ = self.settings.verification_keys  # a bad (current or previous) key stops start-up
        if SERVER.workers != 1 and self.settings.state_url == MEMORY_URL:
            logger.warning(
                "TABSERVE_WORKERS=%s with TABSERVE_STATE_URL=memory://: each worker keeps its "
                "own login throttle and revocations; set a redis:// state store to share them",
                SERVER.workers,
            )
        stored = self.model_ref
        self.refused: str | None = None
        try:
            self.predictor = Predictor.from_bundle(
                stored.path, version=str(stored.tag.version), tag=str(stored.tag)
            )
        except BundleIntegrityError as exc:
            # Stay up but never ready (/readyz 503): a crash here would only make BentoML
            # restart the worker forever, with nothing answering on the port.
            self.refused = str(exc)
            logger.error("model %s refused, the service will not become ready: %s", stored, exc)
            ready_gauge().set(0)
            return
        self.validator = RequestValidator(self.predictor.schema, self.settings.max_rows)
        self.metrics = service_metrics()
        if self.predictor.regression:
            self.metrics.use_value_buckets(self.predictor.schema.target.quantiles)
        reference = read_reference(stored.path)
        if reference is None:
            logger.warning("model %s has no drift reference: no drift gauges", stored)
        self.monitor = Monitor(
            self.metrics, self.settings, reference, self.predictor.schema, self.model_version
        )
        ready_gauge().set(1)
        lineage = self.predictor.lineage
        assert lineage is not None  # a verified bundle always has one
        self.metrics.set_model(
            self.model_version, str(stored.tag), lineage.registry_version, lineage.mlflow_run_id
        )
        freeze_startup_heap()  # the UI's lifespan freezes again once Gradio is built

    @property
    def model_version(self) -> str:
        """The version every answer names in ``X-Model-Version``."""
        return self.predictor.version

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded and its schema checked (done in ``__init__``);
        never with a refused model."""
        return self.refused is None and getattr(self, "validator", None) is not None

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=BATCHING.batch_max_size,
        max_latency_ms=BATCHING.batch_max_latency_ms,
    )
    def predict(self, rows: ValidatedRows) -> Answers:
        """Per row (validated by the gateway): the label and class probabilities, or the
        value and its prediction interval."""
        matrix = self.predictor.matrix(rows)
        answers = self.predictor.answers(matrix)
        self.monitor.observe("predict", matrix, answers)
        return answers

    @bentoml.api
    def explain(self, rows: ValidatedRows) -> Answers:
        """Per row: the prediction, the base value and each feature's contribution."""
        matrix = self.predictor.matrix(rows)
        answers = self.predictor.explanations(matrix)
        self.monitor.observe("explain", matrix, answers)
        return answers


# `@bentoml.service` turns the class into a bentoml Service (its `inner` is the class);
# mypy does not apply class decorators, so the Service is named here for the type checker.
SERVICE: bentoml.Service[Tabserve] = cast("bentoml.Service[Tabserve]", Tabserve)
# BentoML creates its tracer when the worker builds the app: without an exporter, tracing
# is switched off here, so that requests pay nothing for it (tabserve/serving/tracing.py).
logger.debug("%s", apply_tracing_default(SERVICE))
# Outermost first: the envelope wraps auth, which wraps the JSON body checks; the docs
# rewriter only touches /docs.json.
SERVICE.add_asgi_middleware(EnvelopeMiddleware, state=serving_instance)
SERVICE.add_asgi_middleware(AuthMiddleware, state=serving_instance)
SERVICE.add_asgi_middleware(JsonBodyMiddleware, state=serving_instance)
SERVICE.add_asgi_middleware(OpenAPIMiddleware, state=serving_instance)
