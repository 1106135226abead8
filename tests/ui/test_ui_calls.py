"""The UI's event calls as a hostile client makes them, against the real server
(tests/ui/conftest.py): requests a browser never sends.

A user with only the ``predict`` scope names a server file as the batch tab's upload
(``/etc/passwd``, a CSV outside the upload folder with the model's columns, ``/dev/zero``,
a URL, a path that climbs out of the upload folder, a symlink planted in it), or another
session's upload, or sends calls of the wrong shape. Every one is a 4xx in the service's
envelope, nothing is copied into Gradio's cache and nothing is read; the UI's own
upload-then-score flow still works.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from tabserve.security.tokens import issue_token
from tests.ui.browser import csv_bytes
from tests.ui.conftest import UIServer

pytestmark = pytest.mark.slow


def _auth(server: UIServer, user: str = "bob") -> dict[str, str]:
    token = issue_token(server.settings, user, ["predict"])[0]
    return {"Authorization": f"Bearer {token}"}


def _file(path: str) -> dict[str, Any]:
    return {"path": path, "orig_name": "batch.csv", "meta": {"_type": "gradio.FileData"}}


def _score(server: UIServer, headers: dict[str, str], value: Any) -> httpx.Response:
    return httpx.post(
        f"{server.url}/ui/gradio_api/run/score_csv",
        json={"data": [value], "session_hash": "attacker"},
        headers=headers,
        timeout=30,
    )


def _upload(server: UIServer, headers: dict[str, str], body: bytes) -> str:
    uploaded = httpx.post(
        f"{server.url}/ui/gradio_api/upload",
        files={"files": ("batch.csv", body, "text/csv")},
        headers=headers,
    )
    assert uploaded.status_code == 200, uploaded.text[:300]
    (path,) = uploaded.json()
    return str(path)


def _cached_names(server: UIServer) -> set[str]:
    return {p.name for p in server.gradio_dir.rglob("*") if p.is_file()}


def _refused(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_server_files_named_as_uploads_are_refused_before_anything_is_read(
    ui_server: UIServer, tmp_path: Path
) -> None:
    headers = _auth(ui_server)
    model = ui_server.model
    log_start = len(ui_server.log.read_text())
    outside = tmp_path / "private.csv"  # the model's columns: it would be scored
    outside.write_bytes(csv_bytes(model.rows[:3], {}))
    genuine = _upload(ui_server, headers, csv_bytes(model.rows[:2], {}))
    folder = Path(genuine).parent
    planted = folder.parent / ("0" * 64)
    planted.mkdir(exist_ok=True)
    (planted / "link.csv").symlink_to(outside)
    before = _cached_names(ui_server)
    for path in (
        "/etc/passwd",
        str(outside),
        "/dev/zero",
        "http://127.0.0.1:9/batch.csv",
        f"{folder}/../../../../etc/passwd",
        str(planted / "link.csv"),
        "relative.csv",
    ):
        error = _refused(_score(ui_server, headers, _file(path)))
        assert error["code"] == "validation_error", path
        assert error["details"][0]["field"] == "data[0]", path
        assert "not a file uploaded" in error["details"][0]["message"], path
        assert "passwd" not in str(error) and "private" not in str(error)
    not_a_file = _refused(_score(ui_server, headers, {"path": "/etc/passwd"}))
    assert "not a Gradio file reference" in not_a_file["details"][0]["message"]
    assert _cached_names(ui_server) == before, "a refused call copied a file into the cache"
    log = ui_server.log.read_text()[log_start:]
    assert "root:x:0:0" not in log and "Traceback" not in log


def test_an_upload_serves_only_the_session_that_made_it(ui_server: UIServer) -> None:
    alice, bob = _auth(ui_server, "alice"), _auth(ui_server, "bob")
    rows = ui_server.model.rows[:4]
    path = _upload(ui_server, alice, csv_bytes(rows, {}))
    error = _refused(_score(ui_server, bob, _file(path)))
    assert "not a file uploaded in this session" in error["details"][0]["message"]
    scored = _score(ui_server, alice, _file(path))
    assert scored.status_code == 200, scored.text[:500]
    status, download = scored.json()["data"][:2]
    assert "Scored 4 of 4 rows" in status
    fetched = httpx.get(download["url"], headers=alice)
    labels = [r["label"] for r in csv.DictReader(io.StringIO(fetched.text))]
    answers = httpx.post(f"{ui_server.url}/predict", json={"rows": rows}, headers=alice).json()
    assert labels == [str(a["label"]) for a in answers]


def test_malformed_ui_calls_are_4xx_not_500(ui_server: UIServer) -> None:
    headers = _auth(ui_server)
    log_start = len(ui_server.log.read_text())
    url = f"{ui_server.url}/ui/gradio_api"
    config = httpx.get(f"{ui_server.url}/ui/config", headers=headers).json()
    form = next(d for d in config["dependencies"] if d.get("api_name") == "predict_form")
    kinds = {c["id"]: c["type"] for c in config["components"]}
    numbers = [i for i, c in enumerate(form["inputs"]) if kinds[c] == "number"]
    choices = [i for i, c in enumerate(form["inputs"]) if kinds[c] == "dropdown"]
    width = len(form["inputs"])

    def form_call(position: int, value: Any) -> httpx.Response:
        data: list[Any] = [None] * width
        data[position] = value
        return httpx.post(f"{url}/run/predict_form", json={"data": data}, headers=headers)

    cases: list[tuple[str, httpx.Response, int]] = [
        (
            "not JSON",
            httpx.post(
                f"{url}/run/score_csv",
                content=b"{",
                headers={**headers, "Content-Type": "application/json"},
            ),
            400,
        ),
        (
            "not UTF-8",
            httpx.post(
                f"{url}/run/score_csv",
                content='{"data": []}'.encode("utf-16"),
                headers={**headers, "Content-Type": "application/json"},
            ),
            400,
        ),
        ("a list", httpx.post(f"{url}/run/score_csv", json=[], headers=headers), 400),
        ("no data", httpx.post(f"{url}/run/score_csv", json={}, headers=headers), 400),
        ("arity", httpx.post(f"{url}/run/score_csv", json={"data": [1, 2]}, headers=headers), 422),
        ("no event", httpx.post(f"{url}/run/nothing", json={"data": []}, headers=headers), 404),
        (
            "bad index",
            httpx.post(
                f"{url}/run/predict_form", json={"data": [], "fn_index": 999}, headers=headers
            ),
            404,
        ),
        ("text for a number", form_call(numbers[0], "ten"), 422),
        ("boolean for a number", form_call(numbers[0], True), 422),
        ("not a choice", form_call(choices[0], "Atlantis"), 422),
        ("queue", httpx.post(f"{url}/queue/join", json={"data": []}, headers=headers), 404),
        ("call", httpx.post(f"{url}/call/score_csv", json={"data": [None]}, headers=headers), 404),
        (
            "form body",
            httpx.post(f"{url}/run/score_csv", data={"data": "x"}, headers=headers),
            415,
        ),
    ]
    for name, response, status in cases:
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.json()["error"]["request_id"], name
    assert form_call(numbers[0], 1.5).status_code == 200
    assert "Traceback" not in ui_server.log.read_text()[log_start:]


def test_gradio_refuses_a_server_path_by_itself_behind_the_gate(tmp_path: Path) -> None:
    """The second wall: with the gate bypassed, Gradio's own check (switched on by
    ``enforce_upload_checks``) refuses a path outside its upload folder before copying."""
    import gradio as gr
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from ui.guard import blocked_folders, enforce_upload_checks, upload_folder

    seen: list[str] = []

    def handler(path: str | None) -> str:
        seen.append(str(path))
        return "read"

    with gr.Blocks() as blocks:
        upload = gr.File(type="filepath")
        out = gr.Textbox()
        upload.upload(handler, inputs=upload, outputs=out, api_name="score", queue=False)
    host = FastAPI()
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n1,2\n")
    blocked = blocked_folders([str(tmp_path)])
    assert str(upload_folder()) not in blocked and str(tmp_path.resolve()) in blocked
    gr.mount_gradio_app(host, blocks, path="/ui", blocked_paths=blocked, show_error=True)
    assert enforce_upload_checks(blocks)
    with TestClient(host) as client:
        for path in ("/etc/passwd", str(secret)):
            response = client.post("/ui/gradio_api/run/score", json={"data": [_file(path)]})
            assert response.status_code == 500  # Gradio's own answer; the gate makes it 422
            assert "Cannot move" in response.text
    assert seen == []
    assert not any(p.name in ("passwd", "secret.csv") for p in upload_folder().rglob("*"))
