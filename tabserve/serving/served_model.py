"""The served model: what a worker loads, how its APIs answer, and how the HTTP edge and
the UI find it.

``service.py`` declares the BentoML service as a subclass of :class:`ServedModel`; the
loading (integrity check, validator, metrics, drift monitor), the answers and the
readiness live here. :func:`loaded_instance` is what every middleware and the UI call to
reach the worker's instance; :func:`install_edge` stacks the HTTP edge on the service.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import pydantic_core
from bentoml import get_current_service
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import PlainSerializer, SkipValidation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tabserve.core.bundle import BundleIntegrityError, read_reference
from tabserve.core.errors import NotReadyError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import RequestValidator
from tabserve.http.auth import OPEN_PATHS, ROUTE_SCOPES, AuthMiddleware, SessionBackend
from tabserve.http.body import JsonBodyMiddleware
from tabserve.http.envelope import EnvelopeMiddleware, error_response
from tabserve.http.openapi import OpenAPIMiddleware
from tabserve.security.state import MEMORY_URL
from tabserve.serving.feedback import feedback_route
from tabserve.serving.heap import freeze_startup_heap
from tabserve.serving.live import LiveRecord
from tabserve.serving.logs import assign_request_id
from tabserve.serving.metrics import forget_dead_workers, ready_gauge, service_metrics
from tabserve.serving.monitor import Monitor
from tabserve.serving.request_metrics import fold_request_metric_paths
from tabserve.serving.settings import Settings
from tabserve.serving.shadow import Shadow, ShadowError, check_compatible
from tabserve.serving.startup import prepare_process
from tabserve.serving.tracing import apply_tracing_default

logger = logging.getLogger("tabserve.service")


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


class ServedModel:
    """The body of the BentoML service class: loads the model named by its ``model_ref``.

    Attributes:
        settings: the worker's settings (read once, at import: ``prepare_process``).
        predictor: the loaded model.
        validator: the request validator built from its schema.
        monitor: metrics, drift window and inference log of its calls.
        refused: why the model was refused (its integrity check failed), or None.
        live: the served-rows record (``TABSERVE_RECORD_URL``), or None.
    """

    model_ref: Any  # declared by the service class (a bentoml.models.BentoModel)

    def __init__(self) -> None:
        self.settings: Settings = prepare_process().settings
        logging.getLogger("tabserve").setLevel(self.settings.log_level)
        _ = self.settings.keys  # a bad (current or previous) key stops start-up
        workers = prepare_process().server.workers
        if workers != 1 and self.settings.state_url == MEMORY_URL:
            logger.warning(
                "TABSERVE_WORKERS=%s with TABSERVE_STATE_URL=memory://: each worker keeps its "
                "own login throttle and revocations; set a redis:// state store to share them",
                workers,
            )
        if forgotten := forget_dead_workers():
            logger.info("forgot the live gauges of worker process(es) gone: %s", forgotten)
        stored = self.model_ref
        self.refused: str | None = None
        self.live: LiveRecord | None = None
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
        self.metrics = service_metrics()
        if self.predictor.regression:
            self.metrics.use_value_buckets(self.predictor.schema.target.quantiles)
        reference = read_reference(stored.path)
        if reference is None:
            logger.warning("model %s has no drift reference: no drift gauges", stored)
        self.monitor = Monitor(
            self.metrics, self.settings, reference, self.predictor.schema, self.model_version
        )
        self.monitor.start_publisher()
        if self.settings.record_url is not None:
            self.live = LiveRecord(
                self.settings,
                self.model_version,
                None if self.predictor.regression else self.predictor.classes,
                self.predictor.lineage.metrics if self.predictor.lineage else {},
                self.predictor.schema.feature_names,
            )
            self.live.start()
            self.monitor.live = self.live
            logger.info("recording served rows in %s", self.live.store.safe_url)
        self.monitor.shadow = self._start_shadow()
        self.validator = RequestValidator(
            self.predictor.schema,
            self.settings.max_rows,
            self.settings.unknown_category,
            on_unknown=self.monitor.unknown_category,
        )
        ready_gauge().set(1)
        lineage = self.predictor.lineage
        assert lineage is not None  # a verified bundle always has one
        self.metrics.set_model(
            self.model_version, str(stored.tag), lineage.registry_version, lineage.mlflow_run_id
        )
        freeze_startup_heap()  # the UI's lifespan freezes again once Gradio is built

    def _start_shadow(self) -> Shadow | None:
        """The shadow challenger (``TABSERVE_SHADOW_MODEL``), started; None without one, or
        when it cannot run (said in the log: the champion serves either way)."""
        stored = getattr(self, "shadow_ref", None)
        if stored is None:
            return None
        if self.live is None:
            logger.error(
                "TABSERVE_SHADOW_MODEL=%s needs TABSERVE_RECORD_URL (its answers go to the "
                "record): no shadow",
                self.settings.shadow_model,
            )
            return None
        try:
            predictor = Predictor.from_bundle(
                stored.path, version=str(stored.tag.version), tag=str(stored.tag)
            )
            check_compatible(self.predictor.schema, predictor.schema)
        except (BundleIntegrityError, ShadowError) as exc:
            logger.error("shadow model %s refused, no shadow: %s", stored.tag, exc)
            return None
        shadow = Shadow(
            predictor,
            self.live,
            self.settings.shadow_max_share,
            self.settings.shadow_queue_rows,
            champion=self.predictor.schema,
        )
        shadow.start()
        logger.info("shadow model %s scores every answered row", stored.tag)
        return shadow

    @property
    def model_version(self) -> str:
        """The version every answer names in ``X-Model-Version``."""
        return self.predictor.version

    def __is_ready__(self) -> bool:
        """Ready once the model is loaded and its schema checked (done in ``__init__``);
        never with a refused model."""
        return self.refused is None and getattr(self, "validator", None) is not None

    def predictions(self, rows: Any) -> list[dict[str, Any]]:
        """Per row: its id, the label and class probabilities, or the value and its
        interval."""
        matrix = self.predictor.matrix(rows)
        answers = with_ids(rows, self.predictor.answers(matrix))
        self.monitor.observe("predict", matrix, answers)
        self.monitor.record(rows, answers, "predict", matrix=matrix)
        return answers

    def explanations(self, rows: Any) -> list[dict[str, Any]]:
        """Per row: its id, the prediction, the base value and each feature's
        contribution."""
        matrix = self.predictor.matrix(rows)
        answers = with_ids(rows, self.predictor.explanations(matrix))
        self.monitor.observe("explain", matrix, answers)
        self.monitor.record(rows, answers, "explain")
        return answers


def with_ids(rows: Any, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each answer given its row's id (rows given no id, a direct call's, keep none)."""
    for row, answer in zip(rows, answers, strict=True):
        row_id = getattr(row, "id", None)
        if row_id is not None:
            answer["id"] = row_id
    return answers


def loaded_instance() -> ServedModel | None:
    """The loaded service instance of this worker; None before it is ready or if its
    model was refused (integrity check failed).

    Every middleware asks for it on every request (five times a request): BentoML's
    ``get_current_service`` is imported once, since ``bentoml.get_current_service``
    resolves through BentoML's lazy module ``__getattr__`` (4.5 us a call against 0.1 us).
    """
    try:
        instance = get_current_service()
    except BentoMLException:
        return None
    if not isinstance(instance, ServedModel) or instance.refused is not None:
        return None
    return instance


async def _model_card(_: Request) -> JSONResponse:
    """``GET /model``: the model card (version, lineage, metrics, params, schema)."""
    instance = loaded_instance()
    if instance is None:
        response: JSONResponse = error_response(NotReadyError("the model is not loaded yet"))
        return response
    return JSONResponse(instance.predictor.card().as_dict())


def card_app() -> Starlette:
    """The app serving ``GET /model`` and ``POST /feedback``."""
    return Starlette(
        routes=[Route("/model", _model_card, methods=["GET"]), feedback_route(loaded_instance)]
    )


def install_edge(service: Any, sessions: SessionBackend | None = None) -> None:
    """Stack the HTTP edge on ``service`` and settle its tracing.

    Outermost first: the envelope wraps auth (with ``sessions`` for the UI's cookie
    sessions), which wraps the JSON body checks; the docs rewriter only touches
    ``/docs.json``. BentoML creates its tracer when the worker builds the app: without an
    exporter, tracing is switched off here (``tabserve/serving/tracing.py``).
    """
    logger.debug("%s", apply_tracing_default(service))
    routes = {*OPEN_PATHS, *ROUTE_SCOPES, "/model"}
    fold_request_metric_paths(routes, [sessions.prefix] if sessions is not None else [])
    service.add_asgi_middleware(
        EnvelopeMiddleware, state=loaded_instance, request_ids=assign_request_id
    )
    service.add_asgi_middleware(AuthMiddleware, state=loaded_instance, sessions=sessions)
    service.add_asgi_middleware(JsonBodyMiddleware, state=loaded_instance)
    service.add_asgi_middleware(OpenAPIMiddleware, state=loaded_instance)
