"""The UI in a real headless Chromium against a real ``bentoml serve`` (penguins model,
tests/ui/conftest.py)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tabserve.security.tokens import issue_session_token, issue_token
from tests.support import REPO
from tests.ui.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    WAIT_MS,
    complete_row,
    csv_bytes,
    fill_form,
    log_in,
    shown_answer,
    wait_for,
    without_id,
)
from tests.ui.conftest import MAX_ROWS, MAX_UPLOAD_BYTES, UIServer
from ui.session import SESSION_COOKIE

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "tests" / "artifacts"


def _api_predict(server: UIServer, rows: list[dict[str, Any]]) -> httpx.Response:
    token = issue_token(server.settings, "alice", ["predict"])[0]
    return httpx.post(
        f"{server.url}/predict",
        json={"rows": rows},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _assert_refused(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:200]}"
    assert response.json()["error"]["code"] == "unauthenticated", what


# ---- without a browser: what an anonymous or forged client gets ---------------------
def test_unauthenticated_requests_to_the_page_and_gradio_routes_are_refused(
    ui_server: UIServer,
) -> None:
    url = ui_server.url
    page = httpx.get(f"{url}/ui/", headers={"Accept": "text/html"})
    assert page.status_code == 303 and page.headers["location"] == "/ui/login"
    _assert_refused(httpx.get(f"{url}/ui"), "GET /ui (not a browser)")
    for path in (
        "/ui/config",
        "/ui/gradio_api/info",
        "/ui/gradio_api/config",
        "/ui/theme.css",
        "/ui/gradio_api/file=/etc/hostname",
        "/ui/gradio_api/queue/data?session_hash=abc",
    ):
        _assert_refused(httpx.get(f"{url}{path}"), f"GET {path}")
    upload = httpx.post(
        f"{url}/ui/gradio_api/upload", files={"files": ("a.csv", b"x,y\n1,2\n", "text/csv")}
    )
    _assert_refused(upload, "POST upload")
    join = httpx.post(f"{url}/ui/gradio_api/queue/join", json={"data": [], "fn_index": 0})
    _assert_refused(join, "POST queue/join")

    settings = ui_server.settings
    api_token = issue_token(settings, "alice", ["predict"])[0]
    _assert_refused(
        httpx.get(f"{url}/ui/config", cookies={SESSION_COOKIE: api_token}),
        "an API token is not a session",
    )
    expired = issue_session_token(
        settings.model_copy(update={"ui_session_ttl_s": -60}), "alice", ["predict"]
    )[0]
    _assert_refused(
        httpx.get(f"{url}/ui/config", cookies={SESSION_COOKIE: expired}), "expired session"
    )
    back = httpx.get(
        f"{url}/ui/", cookies={SESSION_COOKIE: expired}, headers={"Accept": "text/html"}
    )
    assert back.status_code == 303 and back.headers["location"] == "/ui/login?msg=expired"
    session = issue_session_token(settings, "alice", ["predict"])[0]
    assert httpx.get(f"{url}/ui/config", cookies={SESSION_COOKIE: session}).status_code == 200
    _assert_refused(
        httpx.get(f"{url}/model", cookies={SESSION_COOKIE: session}),
        "the session cookie is not accepted by the API",
    )


# ---- in the browser ---------------------------------------------------------------
def test_log_in_predict_and_score_a_csv_in_chromium(ui_server: UIServer, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's chromium (see the Makefile)")
    url, model = ui_server.url, ui_server.model
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.on(
                "request",
                lambda r: outside.append(r.url) if not r.url.startswith((url, "data:")) else None,
            )
            page = context.new_page()
            log_in(page, url, "alice")
            cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/ui"

            # The form: every input set from a known row, then Predict.
            row = complete_row(model, model.targets[0])
            expected = _api_predict(ui_server, [row])
            assert expected.status_code == 200, expected.text
            answer = without_id(expected.json()[0])
            wait_for(lambda: shown_answer(page) is not None, True, "the first prediction")
            assert shown_answer(page) != answer  # the defaults give another answer
            fill_form(page, model, row)
            observed = page.locator('[id="feature-observed"] input').first
            assert observed.input_value() == row["observed"]  # a date typed into its picker
            page.click("#ui-predict")
            wait_for(lambda: shown_answer(page), answer, "probabilities shown vs POST /predict")
            assert f"Predicted label: {answer['label']}" in page.inner_text("#ui-label")
            page.wait_for_selector("#ui-proba-chart .js-plotly-plot", timeout=WAIT_MS)
            page.wait_for_selector("#ui-contrib-chart .js-plotly-plot", timeout=WAIT_MS)
            page.wait_for_selector("#ui-importance-chart .js-plotly-plot", timeout=WAIT_MS)
            card = page.inner_text("#ui-card")
            assert "Model card" in card
            assert "date: the model reads .year, .month, .day" in card  # under `observed`
            time.sleep(0.5)  # let plotly finish its transitions before the picture
            page.screenshot(path=str(ARTIFACTS / "ui_form.png"), full_page=True)

            # Changing an input updates the answer without pressing Predict.
            island = page.locator('[id="feature-island"]')
            island.locator("input").click()
            other = next(
                c for c in model.schema.feature("island").categories or [] if c != row["island"]
            )
            island.locator(f'[role="option"][aria-label="{other}"]').click()
            changed = without_id(_api_predict(ui_server, [{**row, "island": other}]).json()[0])
            wait_for(lambda: shown_answer(page), changed, "answer after an input change")

            # The random example button fills the form from the test split.
            page.click("#ui-random")
            page.wait_for_function(
                "document.querySelector('#ui-example-note').innerText.includes('true label')",
                timeout=WAIT_MS,
            )

            # Batch: the size and row limits, then a CSV with one bad row.
            page.get_by_role("tab", name="Batch (CSV)").click()
            too_many = tmp_path / "too_many.csv"
            too_many.write_bytes(csv_bytes(model.rows[: MAX_ROWS + 10], {}))
            page.set_input_files("#ui-batch-upload input[type=file]", str(too_many))
            page.wait_for_function(
                "document.querySelector('#ui-batch-status').innerText.includes('Not scored')",
                timeout=WAIT_MS,
            )
            status = page.inner_text("#ui-batch-status")
            assert f"{MAX_ROWS + 10} rows; the limit is {MAX_ROWS} rows" in status, status

            page.reload()
            page.get_by_role("tab", name="Batch (CSV)").click()
            too_big = tmp_path / "too_big.csv"
            too_big.write_bytes(csv_bytes(model.rows * 3, {}))
            assert too_big.stat().st_size > MAX_UPLOAD_BYTES
            page.set_input_files("#ui-batch-upload input[type=file]", str(too_big))
            page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=WAIT_MS)

            page.reload()
            page.get_by_role("tab", name="Batch (CSV)").click()
            rows = [dict(r) for r in model.rows[:8]]
            rows[3]["observed"] = "31/02/2008"  # line 5 (the header is line 1): no date
            rows[5]["island"] = "Atlantis"  # a new island: answered as missing, like the API
            batch = tmp_path / "batch.csv"
            batch.write_bytes(csv_bytes(rows, {model.schema.target.name: model.targets[:8]}))
            page.set_input_files("#ui-batch-upload input[type=file]", str(batch))
            page.wait_for_function(
                "document.querySelector('#ui-batch-status').innerText.includes('Scored')",
                timeout=WAIT_MS,
            )
            assert "Scored 7 of 8 rows" in page.inner_text("#ui-batch-status")
            refused = _api_predict(ui_server, [rows[3]])
            assert refused.status_code == 422
            reason = refused.json()["error"]["details"][0]["message"]

            def rejected_rows() -> list[list[str]]:
                table: dict[int, dict[int, str]] = {}
                for cell in page.locator('#ui-batch-errors [role="gridcell"]').all():
                    row_at = int(cell.get_attribute("data-row") or 0)
                    col_at = int(cell.get_attribute("data-col") or 0)
                    table.setdefault(row_at, {})[col_at] = cell.inner_text().strip()
                return [[r[c] for c in sorted(r)] for _, r in sorted(table.items())]

            assert "not a date in ISO 8601" in reason
            wait_for(rejected_rows, [["5", "observed", reason]], "the rejected rows listed")
            link = page.locator("#ui-batch-download a[download]")
            with page.expect_download() as download_info:
                link.click()
            scored = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
            good = [r for i, r in enumerate(rows) if i != 3]
            answers = _api_predict(ui_server, good).json()
            assert [r["line"] for r in scored] == ["2", "3", "4", "6", "7", "8", "9"]
            assert all(r[model.schema.target.name] for r in scored)  # extra columns kept
            for got, want in zip(scored, answers, strict=True):
                assert got["label"] == want["label"]
                for cls, p in want["probabilities"].items():
                    assert float(got[f"proba_{cls}"]) == p
            href = link.get_attribute("href")
            assert href and "/ui/gradio_api/file=" in href
            _assert_refused(httpx.get(href), "the scored file without a session")
            time.sleep(0.5)
            page.screenshot(path=str(ARTIFACTS / "ui_batch.png"), full_page=True)

            # Logging out ends the session.
            page.click("#ui-logout")
            page.wait_for_selector("#login", timeout=WAIT_MS)
            assert "logged out" in page.inner_text("body")
            assert page.request.get(f"{url}/ui/config").status == 401

            # A user without the explain scope gets predictions but no contributions;
            # one without the predict scope gets no session at all.
            log_in(page, url, "bob")
            page.wait_for_selector("#ui-contrib-chart .js-plotly-plot", timeout=WAIT_MS)
            page.get_by_text("lacks the 'explain' scope").first.wait_for(timeout=WAIT_MS)
            page.click("#ui-logout")
            page.wait_for_selector("#login", timeout=WAIT_MS)
            page.fill("#username", "eve")
            page.fill("#password", PASSWORD)
            page.click("#login")
            page.wait_for_selector("#login", timeout=WAIT_MS)
            assert "lacks the 'predict' scope" in page.inner_text("body")
        finally:
            browser.close()
    assert outside == [], f"the UI reached outside the server: {outside}"
