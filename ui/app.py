"""The Gradio Blocks of the UI: a schema-driven form, charts, batch scoring, the model card.

:func:`build_blocks` takes the objects the service already loaded (predictor,
validator, limits); every handler calls them in process, so the UI's answers are
the API's for the same row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tabserve.core.errors import RequestValidationError
from tabserve.core.predictor import Predictor
from tabserve.core.validation import ROWS_FIELD, RequestValidator
from tabserve.http.requests import REQUEST_ID, SCOPES
from tabserve.security.scopes import grants
from tabserve.serving.monitor import Monitor, named_answers
from ui.batch import REJECTED_COLUMNS, BatchError, read_csv, score_frame
from ui.card import card_markdown, shadow_markdown
from ui.charts import (
    contribution_chart,
    empty_chart,
    importance_chart,
    probability_chart,
    value_chart,
)
from ui.form import FormField, example_rows, form_fields, row_from_values, values_from_row

logger = logging.getLogger("tabserve.ui")

FIELDS_PER_ROW = 3
SCORED_FILE_TTL_S = 3600
PREVIEW_ROWS = 20
EXPLAIN_SCOPE = "explain"


@dataclass(frozen=True)
class UILimits:
    """The batch tab's limits (from the service settings)."""

    max_upload_bytes: int
    max_rows: int


def _component(spec: FormField) -> gr.Number | gr.Dropdown | gr.DateTime:
    elem_id = f"feature-{spec.name}"
    if spec.kind in ("date", "timestamp"):
        return gr.DateTime(
            value=spec.default,
            include_time=spec.kind == "timestamp",
            type="string",  # as typed or picked: the validator reads ISO 8601 text
            label=spec.label,
            info=spec.info,
            elem_id=elem_id,
            elem_classes=["feature-input"],
            min_width=140,
        )
    if spec.kind == "number":
        return gr.Number(
            value=spec.default,
            label=spec.label,
            info=spec.info,
            precision=0 if spec.integer else None,
            step=spec.step,
            elem_id=elem_id,
            elem_classes=["feature-input"],
            min_width=140,
        )
    return gr.Dropdown(
        choices=list(spec.choices),
        value=spec.default,
        label=spec.label,
        info=spec.info,
        elem_id=elem_id,
        elem_classes=["feature-input"],
        min_width=140,
        filterable=True,
    )


def _request_scopes(request: gr.Request | None) -> tuple[str, ...]:
    """The scopes the auth middleware verified for this request (empty if unknown)."""
    raw = getattr(request, "request", None) if request is not None else None
    state = getattr(raw, "scope", {}).get("state", {}) if raw is not None else {}
    scopes = state.get(SCOPES, ())
    return tuple(scopes) if isinstance(scopes, list | tuple) else ()


def _request_id(request: gr.Request | None) -> str | None:
    """The id the service gave this request (``X-Request-ID``), for the inference log."""
    raw = getattr(request, "request", None) if request is not None else None
    state = getattr(raw, "scope", {}).get("state", {}) if raw is not None else {}
    found = state.get(REQUEST_ID)
    return str(found) if found is not None else None


def _validation_message(error: RequestValidationError) -> str:
    lines = [f"**The form is not valid:** {error.message}"]
    for detail in error.details[:20]:
        field = detail.get("field")
        lines.append(f"- `{field}`: {detail['message']}" if field else f"- {detail['message']}")
    return "\n".join(lines)


class ScoredFiles:
    """A private folder for the scored CSVs; files older than an hour are removed."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tabserve-ui-"))

    def new_path(self, stem: str) -> Path:
        cutoff = time.time() - SCORED_FILE_TTL_S
        for old in self.root.glob("*/*.csv"):
            with contextlib.suppress(OSError):  # another request may be cleaning up too
                if old.stat().st_mtime < cutoff:
                    old.unlink()
                    old.parent.rmdir()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "batch"
        return folder / f"{safe}-scored.csv"


def build_blocks(
    predictor: Predictor,
    validator: RequestValidator,
    limits: UILimits,
    monitor: Monitor | None = None,
) -> gr.Blocks:
    """The whole UI for one loaded model.

    Args:
        predictor: the service's predictor (called in process).
        validator: the service's request validator (the API's rules and messages).
        limits: size and row limits of the batch tab.
        monitor: the service's monitor: the UI's rows count in its metrics, drift window
            and inference log like the API's, as ``source="ui"`` (None: not recorded).
    """
    schema = predictor.schema
    fields = form_fields(schema)
    examples = example_rows(schema, predictor.examples)
    card = predictor.card().as_dict()
    importance = predictor.global_importance()
    scored_files = ScoredFiles()
    classes = [str(c) for c in schema.target.classes]
    target = schema.target
    regression = target.is_regression
    blank_title = f"Predicted {target.name}" if regression else "Class probabilities"
    no_answer = f"### Predicted {target.name}: –" if regression else "### Predicted label: –"

    inputs: list[gr.Number | gr.Dropdown | gr.DateTime] = []  # filled when the form is laid out

    def predict(data: dict[gr.components.Component, Any], request: gr.Request) -> tuple[Any, ...]:
        """Validate the form's row like the API, then predict (and explain) in process."""
        row = row_from_values(schema, [data[c] for c in inputs])
        try:
            clean = validator.validate({ROWS_FIELD: [row]})
        except RequestValidationError as error:
            blank = empty_chart(blank_title, "fix the form to see a prediction")
            return (no_answer, _validation_message(error), blank, "", None)
        matrix = predictor.matrix(clean)
        answers = named_answers(predictor.answers(matrix), _request_id(request))
        if monitor is not None:
            monitor.observe("predict", matrix, answers, source="ui")
            monitor.log_rows(
                clean, answers, request_id=_request_id(request), endpoint="predict", source="ui"
            )
            monitor.record(clean, answers, "predict", source="ui", matrix=matrix)
        answer = answers[0]
        raw = json.dumps(answer)
        if regression:
            interval = answer["interval"]
            headline = (
                f"### Predicted {target.name}: `{answer['value']:.6g}`  \n"
                f"{interval['coverage']:.0%} interval: {interval['low']:.6g} to "
                f"{interval['high']:.6g}"
            )
            chart = value_chart(
                answer["value"],
                interval["low"],
                interval["high"],
                interval["coverage"],
                target.quantiles,
                target.name,
            )
        else:
            headline = f"### Predicted label: `{answer['label']}`"
            chart = probability_chart(answer["probabilities"], answer["label"])
        if grants(_request_scopes(request), EXPLAIN_SCOPE):
            explained = predictor.explain(clean)[0]
            contrib = contribution_chart(
                explained["contributions"],
                explained.get("explained_class"),
                explained["base_value"],
            )
        else:
            contrib = empty_chart(
                "Why this prediction", f"your account lacks the {EXPLAIN_SCOPE!r} scope"
            )
        return (headline, "", chart, raw, contrib)

    def random_example() -> tuple[Any, ...]:
        if not examples:
            return (*(gr.skip() for _ in fields), "No test examples ship with this model.")
        pick = random.choice(examples)  # a UI convenience, not security
        truth = "true value" if regression else "true label"
        note = f"Random example from the test split ({truth}: `{pick['label']}`)."
        return (*values_from_row(schema, pick["row"]), note)

    def score(upload: str | None, request: gr.Request) -> tuple[Any, ...]:
        if upload is None:
            return ("Upload a CSV file to score it.", None, _empty_rejected(), None)
        path = Path(upload)
        try:
            with path.open("rb") as file:  # never more than the limit (ui/guard.py checks it)
                data = file.read(limits.max_upload_bytes + 1)
            frame = read_csv(data, limits.max_upload_bytes, limits.max_rows)
            result = score_frame(frame, predictor, validator, monitor, _request_id(request))
        except BatchError as error:
            return (f"**Not scored.** {error}", None, _empty_rejected(), None)
        out = scored_files.new_path(path.stem)
        result.scored.to_csv(out, index=False)
        logger.info("UI batch: scored %d of %d rows", len(result.scored), result.total_rows)
        status = ("**Done.** " if len(result.rejected) == 0 else "**Partly done.** ") + (
            result.summary
        )
        # The preview shows the answers first; the CSV keeps the uploaded column order.
        predictions = [c for c in result.scored.columns if c not in frame.columns]
        preview = result.scored[
            predictions + [c for c in result.scored.columns if c not in predictions]
        ].head(PREVIEW_ROWS)
        return (status, str(out), result.rejected, preview)

    limit_kb = limits.max_upload_bytes // 1024
    with gr.Blocks(
        title=f"tabserve · {card['tag']}",
        analytics_enabled=False,
        # Uploaded and scored files leave Gradio's cache after an hour.
        delete_cache=(SCORED_FILE_TTL_S, SCORED_FILE_TTL_S),
    ) as blocks:
        with gr.Row(elem_id="ui-header"):
            what = (
                f"`{target.name}`, observed {target.min:.4g} to {target.max:.4g}"
                if regression
                else f"{len(classes)} classes: {', '.join(f'`{c}`' for c in classes)}"
            )
            gr.Markdown(f"## tabserve · `{card['tag']}` · {card['task']} ({what})")
            gr.HTML('<a href="logout" id="ui-logout" class="logout">Log out</a>')
        with gr.Tabs():
            with gr.Tab("Predict", id="predict", elem_id="tab-predict"):
                with gr.Row():
                    with gr.Column(scale=3):
                        with gr.Row():
                            example_btn = gr.Button(
                                "Random test example", elem_id="ui-random", size="md"
                            )
                            predict_btn = gr.Button(
                                "Predict", variant="primary", elem_id="ui-predict", size="md"
                            )
                        note = gr.Markdown(
                            "Defaults are the training medians and most frequent categories.",
                            elem_id="ui-example-note",
                        )
                        for start in range(0, len(fields), FIELDS_PER_ROW):
                            with gr.Row(equal_height=True):
                                for spec in fields[start : start + FIELDS_PER_ROW]:
                                    inputs.append(_component(spec))
                    with gr.Column(scale=2):
                        label_out = gr.Markdown(no_answer, elem_id="ui-label")
                        status_out = gr.Markdown("", elem_id="ui-status")
                        proba_plot = gr.Plot(
                            label=blank_title, show_label=False, elem_id="ui-proba-chart"
                        )
                        proba_raw = gr.Textbox(
                            label="Answer as JSON (exact values, as POST /predict returns)",
                            elem_id="ui-proba-json",
                            interactive=False,
                            lines=2,
                            buttons=["copy"],
                        )
                        contrib_plot = gr.Plot(
                            label="Feature contributions",
                            show_label=False,
                            elem_id="ui-contrib-chart",
                        )
                with gr.Row():
                    with gr.Column():
                        gr.Plot(
                            value=importance_chart(importance),
                            label="Global feature importance",
                            show_label=False,
                            elem_id="ui-importance-chart",
                        )
                    with gr.Column():
                        gr.Markdown(card_markdown(card), elem_id="ui-card")
                        shadow_card = None
                        if monitor is not None and monitor.shadow is not None:
                            shadow_card = gr.Markdown(shadow_markdown(monitor), elem_id="ui-shadow")
            with gr.Tab("Batch (CSV)", id="batch", elem_id="tab-batch"):
                gr.Markdown(
                    "Upload a CSV whose header names the model's features "
                    f"(up to {limit_kb:,} KB and {limits.max_rows:,} rows). Every row is "
                    "checked like `POST /predict`; rows that fail are listed with the "
                    "reason and the others are scored. The scored CSV keeps your columns "
                    "and adds `line` and "
                    + (
                        "`prediction`, `low` and `high` (the prediction interval)."
                        if regression
                        else "`label` and one `proba_<class>` column per class."
                    )
                )
                upload = gr.File(
                    label="CSV to score",
                    file_types=[".csv"],
                    type="filepath",
                    elem_id="ui-batch-upload",
                )
                batch_status = gr.Markdown("", elem_id="ui-batch-status")
                download = gr.File(
                    label="Scored CSV", interactive=False, elem_id="ui-batch-download"
                )
                rejected = gr.Dataframe(
                    value=_empty_rejected(),
                    label="Rejected rows (line 1 is the header)",
                    interactive=False,
                    elem_id="ui-batch-errors",
                )
                preview = gr.Dataframe(
                    value=pd.DataFrame(columns=["line", "prediction" if regression else "label"]),
                    label=f"Scored rows (first {PREVIEW_ROWS})",
                    interactive=False,
                    elem_id="ui-batch-preview",
                )

        # queue=False: each event is one plain HTTP request and answer. Gradio's queue
        # keeps an event in the memory of the worker that took its `queue/join` and streams
        # its result from there, so with several workers (TABSERVE_WORKERS) or replicas the
        # stream, opened on another connection, would wait forever on another worker.
        outputs = [label_out, status_out, proba_plot, proba_raw, contrib_plot]
        gr.on(
            triggers=[predict_btn.click, blocks.load, *(c.change for c in inputs)],
            fn=predict,
            inputs=set(inputs),
            outputs=outputs,
            trigger_mode="always_last",
            api_name="predict_form",
            queue=False,
        )
        example_btn.click(random_example, inputs=None, outputs=[*inputs, note], queue=False)
        if shadow_card is not None:  # how the shadow is doing, at every page load
            blocks.load(
                lambda: shadow_markdown(monitor),
                outputs=shadow_card,
                api_name="shadow_card",
                queue=False,
            )
        upload.upload(
            score,
            inputs=upload,
            outputs=[batch_status, download, rejected, preview],
            api_name="score_csv",
            queue=False,
        )
        upload.clear(
            lambda: ("", None, _empty_rejected(), None),
            outputs=[batch_status, download, rejected, preview],
            queue=False,
        )
    return blocks


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame(columns=list(REJECTED_COLUMNS))
