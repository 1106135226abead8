"""The tabserve BentoML service: declarations only.

Serves the champion model that the pipeline imported into the BentoML model store
(``TABSERVE_MODEL_TAG``, default ``tabserve:latest``): ``POST /predict`` (adaptively
batched), ``POST /explain``, ``GET /model``, and the browser UI (``ui/``, Gradio) at
``/ui``. What they do lives in ``tabserve/``: loading, answers and readiness in
:class:`tabserve.serving.served_model.ServedModel`, the HTTP edge (envelope, auth, JSON
body, OpenAPI) in ``tabserve/http/``.

Run with ``bentoml serve service:Tabserve`` (or ``tabserve serve``).
"""

from __future__ import annotations

from typing import cast

import bentoml

from tabserve.http.body import ValidatedRows
from tabserve.serving.served_model import (
    Answers,
    ServedModel,
    card_app,
    install_edge,
    loaded_instance,
)
from tabserve.serving.startup import prepare_process
from ui.mount import create_ui_app
from ui.session import UISessions

# Settings, logging, start-up checks and BentoML's fixes, in every process of
# `bentoml serve`, before BentoML reads the decorators below.
PROCESS = prepare_process()


@bentoml.asgi_app(create_ui_app(loaded_instance), path="/", name="ui")
@bentoml.asgi_app(card_app(), path="/")
@bentoml.service(
    name="tabserve",
    traffic={"timeout": 60},
    workers=PROCESS.server.workers,
    logging={"access": {"enabled": PROCESS.server.access_log == "all"}},
)
class Tabserve(ServedModel):
    """Predictions, explanations and the model card of the served champion."""

    model_ref = bentoml.models.BentoModel(PROCESS.settings.model_tag)
    # A shadow challenger (TABSERVE_SHADOW_MODEL): scores every answered row, off the
    # response path, for the record; None without one.
    shadow_ref = (
        bentoml.models.BentoModel(PROCESS.settings.shadow_model)
        if PROCESS.settings.shadow_model
        else None
    )

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=PROCESS.batching.batch_max_size,
        max_latency_ms=PROCESS.batching.batch_max_latency_ms,
    )
    def predict(self, rows: ValidatedRows) -> Answers:
        """Per row (validated by the HTTP edge): the label and class probabilities, or the
        value and its prediction interval."""
        return self.predictions(rows)

    @bentoml.api
    def explain(self, rows: ValidatedRows) -> Answers:
        """Per row: the prediction, the base value and each feature's contribution."""
        return self.explanations(rows)


# `@bentoml.service` turns the class into a bentoml Service (its `inner` is the class);
# mypy does not apply class decorators, so the Service is named here for the type checker.
SERVICE: bentoml.Service[Tabserve] = cast("bentoml.Service[Tabserve]", Tabserve)
install_edge(SERVICE, sessions=UISessions())
