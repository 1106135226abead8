"""The UI of a regression model in a real headless Chromium against a real ``bentoml
serve``: a predicted value with its interval (as POST /predict answers it) and the chart
of it against the training target, the card's regression metrics, and a scored CSV with
``prediction``, ``low`` and ``high``."""

from __future__ import annotations

import csv
import io
import secrets
import time
from pathlib import Path

import httpx
import pytest

from tabserve.security.users import UserStore
from tests.support import REPO, cheap_hasher, import_test_model, running_server, server_env
from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    WAIT_MS,
    csv_bytes,
    fill_form,
    log_in,
    shown_answer,
    wait_for,
    without_id,
)

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "tests" / "artifacts"


def test_predict_a_value_and_score_a_csv_in_chromium(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright
    from sklearn.datasets import load_diabetes

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (see the Makefile)")
    frame = load_diabetes(as_frame=True, scaled=False).frame
    model = import_test_model(
        tmp_path / "bentoml", frame, "target", {"objective": "reg:squarederror"}
    )
    UserStore(tmp_path / "users.json", hasher=cheap_hasher()).add(
        "alice", PASSWORD, "predict,explain"
    )
    env = server_env(
        tmp_path,
        model.tag,
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        GRADIO_TEMP_DIR=str(tmp_path / "gradio"),
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server(env, tmp_path / "serve.log") as url:
        token = httpx.post(
            f"{url}/auth/token", data={"username": "alice", "password": PASSWORD}
        ).json()["access_token"]

        def api(rows: list[dict[str, object]]) -> list[dict[str, object]]:
            response = httpx.post(
                f"{url}/predict", json={"rows": rows}, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 200, response.text
            return list(response.json())

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                log_in(page, url, "alice")
                assert "regression" in page.inner_text("#ui-header")
                row = model.rows[7]
                answer = without_id(api([row])[0])
                wait_for(lambda: shown_answer(page) is not None, True, "the first prediction")
                fill_form(page, model, row)
                page.click("#ui-predict")
                wait_for(lambda: shown_answer(page), answer, "the answer shown vs POST /predict")
                headline = page.inner_text("#ui-label")
                assert f"Predicted target: {answer['value']:.6g}" in headline, headline
                assert "90% interval" in headline
                page.wait_for_selector("#ui-proba-chart .js-plotly-plot", timeout=WAIT_MS)
                chart = page.inner_text("#ui-proba-chart")
                assert "90% interval" in chart and "Predicted target" in chart
                page.wait_for_selector("#ui-contrib-chart .js-plotly-plot", timeout=WAIT_MS)
                assert "contribution to the predicted value" in page.inner_text("#ui-contrib-chart")
                card = page.inner_text("#ui-card")
                assert "rmse" in card and "regression" in card
                time.sleep(0.5)
                page.screenshot(path=str(ARTIFACTS / "ui_regression.png"), full_page=True)

                page.get_by_role("tab", name="Batch (CSV)").click()
                rows = model.rows[:6]
                batch = tmp_path / "batch.csv"
                batch.write_bytes(csv_bytes(rows, {"target": model.targets[:6]}))
                page.set_input_files("#ui-batch-upload input[type=file]", str(batch))
                page.wait_for_function(
                    "document.querySelector('#ui-batch-status').innerText.includes('Scored')",
                    timeout=WAIT_MS,
                )
                link = page.locator("#ui-batch-download a[download]")
                with page.expect_download() as download_info:
                    link.click()
                text = Path(download_info.value.path()).read_text()
                scored = list(csv.DictReader(io.StringIO(text)))
                assert [r["target"] for r in scored] == [str(t) for t in model.targets[:6]]
                for got, want in zip(scored, api(rows), strict=True):
                    assert float(got["prediction"]) == want["value"]
                    assert float(got["low"]) == want["interval"]["low"]  # type: ignore[index]
                    assert float(got["high"]) == want["interval"]["high"]  # type: ignore[index]
            finally:
                browser.close()
