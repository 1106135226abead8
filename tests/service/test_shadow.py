"""A shadow challenger (issue 34, item 5) on a real ``bentoml serve`` with two workers.

The champion answers; the shadow (a second model in the BentoML store, a shallower one)
scores the same rows off the response path. The client's answers are the champion's own,
the shadow's answers land in the record labelled as the shadow's, the agreement and both
models' quality on the same labelled rows are published, and the UI's model card shows
the shadow in Chromium.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tabserve.core.predictor import Predictor
from tabserve.record.backends import open_store
from tabserve.security.users import UserStore
from tests.service.test_feedback_loop import _metric, _predict, _settled, _token
from tests.support import cheap_hasher, import_test_model, server_env, serving, wait_until
from tests.ui.browser import CHROMIUM, CHROMIUM_ARGS, log_in, wait_for

pytestmark = pytest.mark.slow
PASSWORD = "feedback loop test password"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _without_id(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in a.items() if k != "id"} for a in answers]


def test_a_shadow_scores_every_row_off_the_path_and_is_compared(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.metrics import accuracy_score, log_loss

    frame = load_breast_cancer(as_frame=True).frame
    home = tmp_path / "bentoml"
    champion = import_test_model(home, frame, "target", {"objective": "binary:logistic"})
    shallow = {"objective": "binary:logistic", "max_depth": 1, "eta": 0.05}
    shadow = import_test_model(home, frame, "target", shallow, tag="tabserve-challenger:v2")
    users = UserStore(tmp_path / "users.json", hasher=cheap_hasher())
    users.add("alice", PASSWORD, "predict,feedback")
    record = f"sqlite:///{tmp_path / 'record.db'}"
    env = server_env(
        tmp_path,
        champion.tag,
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        TABSERVE_WORKERS="2",
        TABSERVE_RECORD_URL=record,
        TABSERVE_RECORD_FLUSH_S="0.1",
        TABSERVE_LIVE_QUALITY_INTERVAL_S="1",
        TABSERVE_SHADOW_MODEL=shadow.tag,
    )
    rows = champion.rows[:120]
    with serving(env, tmp_path / "serve.log") as served:
        headers = _token(served.url, "alice")
        answers: list[dict] = []
        for start in range(0, 120, 30):
            answers += _predict(served.url, headers, rows[start : start + 30])
        # The client got the champion's answers, exactly.
        own = Predictor.from_bundle(home / "models" / "tabserve" / "v1", version="v1")
        assert _without_id(answers) == own.predict(rows)

        # The shadow's answers are recorded beside them, under the same ids.
        store = open_store(record)
        wait_until(
            lambda: store.counts().get("served_shadow") == 120, "120 shadow rows in the record"
        )
        shadow_model = Predictor.from_bundle(
            home / "models" / "tabserve-challenger" / "v2", version="v2"
        )
        expected = dict(zip([a["id"] for a in answers], shadow_model.predict(rows), strict=True))
        pairs = store.pairs(1000)
        assert len(pairs) == 120 and {p.shadow_model for p in pairs} == {"v2"}
        assert {p.id: _without_id([p.shadow])[0] for p in pairs} == expected
        agreed = sum(
            a["label"] == e["label"] for a, e in zip(answers, expected.values(), strict=True)
        )

        # Ground truth for every row: both models' quality on the same rows.
        truths = champion.targets[:120]
        sent = httpx.post(
            f"{served.url}/feedback",
            json={
                "rows": [{"id": a["id"], "actual": t} for a, t in zip(answers, truths, strict=True)]
            },
            headers=headers,
        )
        assert sent.json()["counts"]["recorded"] == 120, sent.text

        def published() -> str:
            text = httpx.get(f"{served.url}/metrics").text
            assert _metric(text, "tabserve_shadow_paired_rows", model="v2") == 120
            agreement = _metric(text, "tabserve_shadow_agreement", model="v2")
            assert agreement is not None and math.isclose(agreement, agreed / 120)
            for role, model_answers in (("champion", answers), ("shadow", list(expected.values()))):
                proba = [a["probabilities"]["1"] for a in model_answers]
                labels = [int(a["label"]) for a in model_answers]
                for metric, value in (
                    ("accuracy", accuracy_score(truths, labels)),
                    ("log_loss", log_loss(truths, proba)),
                ):
                    live = _metric(
                        text, "tabserve_shadow_paired_quality", metric=metric, model="v2", role=role
                    )
                    assert live is not None and math.isclose(live, value, rel_tol=1e-9), (
                        role,
                        metric,
                    )
            return text

        metrics = _settled(published)
        assert _metric(metrics, "tabserve_live_labelled_rows", model="v2", role="shadow") == 120
        assert _metric(metrics, "tabserve_shadow_rows_total", outcome="shed") == 0

        # The UI's model card says the shadow runs, and how it does.
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                log_in(page, served.url, "alice", PASSWORD)
                page.wait_for_selector("#ui-shadow", timeout=30_000)
                wait_for(  # the page load's refresh of the card
                    lambda: "of its last 120 rows" in page.inner_text("#ui-shadow"),
                    True,
                    "the shadow's figures on the model card",
                )
                card = page.inner_text("#ui-shadow")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "ui_shadow_card.png"), full_page=True)
            finally:
                browser.close()
        assert "Shadow challenger" in card and "tabserve-challenger:v2" in card
        assert f"{agreed / 120:.1%} of its last 120 rows" in card
