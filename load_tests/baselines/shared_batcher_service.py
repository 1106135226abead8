"""Contender ``shared-batcher``: tabserve with one batching model process behind its workers.

What keeping one worker's batches at any number of workers would take (issue 16): each
HTTP worker of ``bentoml serve`` batches only the requests it receives, so two workers
form batches half as large as one. Here the HTTP workers (``TABSERVE_WORKERS``) do
everything tabserve's service does per request (auth, the one envelope, validation,
encoding, the answers, metrics and the drift window) except the model call, which they
send to a second BentoML service with one worker, ``tabserve-model``, through
``bentoml.depends``: BentoML's own way to compose services, which starts it as its own
process and calls it over a Unix socket (aiohttp, pickled arrays). That one process
batches the encoded rows of every HTTP worker into one model call.

Measured, not shipped: ``make bench`` runs it only when named in ``--only`` (see the
docs/benchmark.md for the result). Its ``tabserve_batch_rows`` counts the rows of each model call
under ``endpoint="model"`` (the bench reads that); the HTTP workers count each request's
rows under ``endpoint="predict"``. No UI or model card routes. ::

    TABSERVE_WORKERS=2 bentoml serve load_tests.baselines.shared_batcher_service:SharedBatcher
"""

from __future__ import annotations

import bentoml
import numpy as np

from load_tests.scrape import SHARED_MODEL_ENDPOINT
from service import PROCESS, SERVICE
from tabserve.core.predictor import (
    Predictor,
    class_probabilities,
    classification_answers,
    regression_answers,
    regression_values,
)
from tabserve.http.auth import AuthMiddleware
from tabserve.http.body import JsonBodyMiddleware, ValidatedRows
from tabserve.http.envelope import EnvelopeMiddleware
from tabserve.serving.metrics import service_metrics
from tabserve.serving.served_model import Answers, loaded_instance


def _keep_dependency_session() -> None:
    """Keep BentoML's client session to the model process for the whole run.

    BentoML's dependency client (``_bentoml_impl.client.proxy2.SessionManager``, since
    1.4.31, still in 1.4.39) replaces its aiohttp session every 100 requests (and every
    300 s) and closes the old one at once, under the requests still in flight on it:
    under load each replacement fails those with ``ServerDisconnectedError`` (500s; about
    6 % of the requests at 32 users here; upstream: bentoml/BentoML#5540, open). Measuring
    the arrangement, not that bug: the session is never replaced.
    """
    from _bentoml_impl.client.proxy2 import SessionManager

    SessionManager._should_refresh = lambda self: False


_keep_dependency_session()


@bentoml.service(
    name="tabserve-model",
    workers=1,
    traffic={"timeout": 60},
    logging={"access": {"enabled": False}},
)
class BatchingModel:
    """The one process that calls the model: the encoded rows of every HTTP worker."""

    model_ref = bentoml.models.BentoModel(PROCESS.settings.model_tag)

    def __init__(self) -> None:
        stored = self.model_ref
        self.predictor = Predictor.from_bundle(
            stored.path, version=str(stored.tag.version), tag=str(stored.tag)
        )
        metrics = service_metrics()
        self.batch_rows = metrics.batch_rows.labels(endpoint=SHARED_MODEL_ENDPOINT, source="api")

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=PROCESS.batching.batch_max_size,
        max_latency_ms=PROCESS.batching.batch_max_latency_ms,
    )
    def outputs(self, matrix: np.ndarray) -> np.ndarray:
        """Per encoded row: the class probabilities, or the value and its interval's ends."""
        self.batch_rows.observe(len(matrix))
        predictor = self.predictor
        if predictor.interval is None:
            return class_probabilities(predictor.booster, matrix)
        return np.column_stack(regression_values(predictor.booster, *predictor.interval, matrix))


class _SharedBatcher(SERVICE.inner):
    """tabserve's service, with the model call sent to :class:`BatchingModel`."""

    batcher = bentoml.depends(BatchingModel)

    @bentoml.api
    async def predict(self, rows: ValidatedRows) -> Answers:
        """As tabserve's ``predict``; the rows' model call is batched by ``tabserve-model``."""
        predictor = self.predictor
        matrix = predictor.matrix(rows)
        outputs = await self.batcher.to_async.outputs(matrix)
        if predictor.interval is None:
            answers = classification_answers(predictor.classes, outputs)
        else:
            answers = regression_answers(
                outputs[:, 0], outputs[:, 1], outputs[:, 2], predictor.interval[1].coverage
            )
        self.monitor.observe("predict", matrix, answers)
        return answers


SharedBatcher = bentoml.service(
    name="tabserve",
    traffic={"timeout": 60},
    workers=PROCESS.server.workers,
    logging={"access": {"enabled": PROCESS.server.access_log == "all"}},
)(_SharedBatcher)
# The same middleware as tabserve's service (service.py), outermost first.
for _middleware in (EnvelopeMiddleware, AuthMiddleware, JsonBodyMiddleware):
    SharedBatcher.add_asgi_middleware(_middleware, state=loaded_instance)
