"""Closing the loop (issue 34, items 1 to 4) on real servers and a real PostgreSQL.

Replica A (``bentoml serve`` with two workers) answers; replica B (a second server on the
same database) takes the ground truth: feedback works whichever process served the row.
The live quality A then publishes equals scikit-learn's figures computed by hand from the
answers the client got and the truths it sent. The database is stopped during traffic:
the answers keep coming, the loss is counted, and recording resumes once it is back.
"""

from __future__ import annotations

import math
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tabserve.record.backends import open_store
from tabserve.security.users import UserStore
from tests.postgres import postgres_server
from tests.support import (
    TestModel,
    cheap_hasher,
    import_test_model,
    server_env,
    serving,
    wait_until,
)

pytestmark = pytest.mark.slow
PASSWORD = "feedback loop test password"


def _metric(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        found = re.match(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", line)
        if not found:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(found.group(2))
    return None


def _token(url: str, user: str) -> dict[str, str]:
    answer = httpx.post(f"{url}/auth/token", data={"username": user, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _settled(check: Any, timeout_s: float = 30) -> Any:
    """``check()`` once its assertions hold (every worker publishes the live figures each
    interval, so a scrape may read one that has not seen the last rows yet); the last
    failure if they never do."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _model_and_users(tmp_path: Path) -> TestModel:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame
    model = import_test_model(
        tmp_path / "bentoml", frame, "target", {"objective": "binary:logistic"}
    )
    users = UserStore(tmp_path / "users.json", hasher=cheap_hasher())
    users.add("client", PASSWORD, "predict")
    users.add("labeller", PASSWORD, "feedback")
    return model


def _predict(url: str, headers: dict[str, str], rows: list[dict[str, Any]]) -> list[dict]:
    answer = httpx.post(f"{url}/predict", json={"rows": rows}, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    answers = answer.json()
    request_id = answer.headers["x-request-id"]
    assert [a["id"] for a in answers] == [f"{request_id}-{i}" for i in range(len(rows))]
    return answers


def test_feedback_from_another_replica_gives_live_quality_equal_to_sklearn(
    tmp_path: Path,
) -> None:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    model = _model_and_users(tmp_path)
    secret = secrets.token_urlsafe(48)
    with postgres_server() as database:
        record_url = database.create_database("record")
        common = {
            "TABSERVE_JWT_SECRET": secret,
            "TABSERVE_RECORD_URL": record_url,
            "TABSERVE_RECORD_FLUSH_S": "0.1",
            "TABSERVE_RECORD_TIMEOUT_S": "1",
            "TABSERVE_LIVE_QUALITY_INTERVAL_S": "1",
        }
        env_a = server_env(tmp_path, model.tag, TABSERVE_WORKERS="2", **common)
        # Its own BentoML home: two servers on one home share (and clear) one metrics folder.
        shutil.copytree(tmp_path / "bentoml", tmp_path / "bentoml-b")
        env_b = server_env(tmp_path, model.tag, **common, BENTOML_HOME=str(tmp_path / "bentoml-b"))
        with (
            serving(env_a, tmp_path / "a.log") as a,
            serving(env_b, tmp_path / "b.log") as b,
        ):
            client, labeller = _token(a.url, "client"), _token(b.url, "labeller")
            # 1. Every answered row carries an id: 4 requests of 50 rows on replica A.
            answers: list[dict] = []
            for start in range(0, 200, 50):
                answers += _predict(a.url, client, model.rows[start : start + 50])
            ids = [answer["id"] for answer in answers]
            assert len(set(ids)) == 200
            # Truth comes later than the answer: A's workers write within their flush
            # interval, and B looks an id up once more after its own; a loaded machine may
            # take longer, so the test waits for A's rows to be in the database first.
            store = open_store(record_url)
            wait_until(lambda: store.counts().get("served_champion") == 200, "200 rows recorded")
            # Truths: the dataset's labels, every fifth flipped (a model that is wrong
            # sometimes), sent to replica B in several requests of new connections.
            truths = [1 - t if i % 5 == 0 else t for i, t in enumerate(model.targets[:200])]
            outcomes: list[dict] = []
            for start in range(0, 200, 40):
                sent = httpx.post(
                    f"{b.url}/feedback",
                    json={
                        "rows": [
                            {"id": i, "actual": t}
                            for i, t in zip(
                                ids[start : start + 40], truths[start : start + 40], strict=True
                            )
                        ]
                    },
                    headers=labeller,
                )
                assert sent.status_code == 200, sent.text
                outcomes += sent.json()["rows"]
            assert [o["outcome"] for o in outcomes] == ["recorded"] * 200

            # 2. Unknown, invalid and duplicate rows, among a good one, in one request.
            mixed = httpx.post(
                f"{b.url}/feedback",
                json={
                    "rows": [
                        {"id": "0123456789abcdef-0", "actual": 1},
                        {"id": ids[0], "actual": 1 - truths[0]},
                        {"id": ids[1], "actual": "maybe"},
                        {"id": ids[2]},
                        {"actual": 1},
                    ]
                },
                headers=labeller,
            )
            assert mixed.status_code == 200, mixed.text
            assert [r["outcome"] for r in mixed.json()["rows"]] == [
                "unknown_id",
                "duplicate",
                "invalid",
                "invalid",
                "invalid",
            ]
            assert "classes" in mixed.json()["rows"][2]["reason"]
            assert mixed.json()["counts"] == {
                "recorded": 0,
                "unknown_id": 1,
                "invalid": 3,
                "duplicate": 1,
            }
            # The scope: a client that may predict may not give feedback.
            refused = httpx.post(
                f"{a.url}/feedback", json={"rows": [{"id": ids[0], "actual": 1}]}, headers=client
            )
            assert refused.status_code == 403, refused.text

            # 3. Live quality on replica A equals scikit-learn's on the same rows.
            version = model.tag.split(":")[1]
            proba = [a_["probabilities"]["1"] for a_ in answers]
            expected = {
                "accuracy": accuracy_score(truths, [int(a_["label"]) for a_ in answers]),
                "log_loss": log_loss(truths, proba),
                "roc_auc": roc_auc_score(truths, proba),
            }

            def published() -> str:
                text = httpx.get(f"{a.url}/metrics").text
                assert _metric(text, "tabserve_live_labelled_rows", model=version) == 200
                for name, value in expected.items():
                    live = _metric(
                        text, "tabserve_live_quality", metric=name, model=version, role="champion"
                    )
                    assert live is not None and math.isclose(live, value, rel_tol=1e-9), (
                        name,
                        live,
                        value,
                    )
                return text

            metrics = _settled(published)
            assert _metric(metrics, "tabserve_test_quality", metric="accuracy") == 0.9
            assert _metric(metrics, "tabserve_recorded_rows_total", role="champion") == 200
            feedback_text = httpx.get(f"{b.url}/metrics").text
            assert _metric(feedback_text, "tabserve_feedback_rows_total", outcome="recorded") == 200
            assert _metric(feedback_text, "tabserve_feedback_delay_seconds_count") == 200

            # 4. The database stops during traffic: answers keep coming, the loss is
            # counted, feedback is a clear 503; recording resumes when it is back.
            assert store.counts()["served_champion"] == 200
            database.stop()
            for start in range(200, 300, 20):
                _predict(a.url, client, model.rows[start : start + 20])
            lost = lambda: _metric(  # noqa: E731
                httpx.get(f"{a.url}/metrics").text,
                "tabserve_record_dropped_rows_total",
                reason="store_error",
            )
            wait_until(lambda: lost() == 100, "100 rows counted as lost")
            down = httpx.post(
                f"{b.url}/feedback", json={"rows": [{"id": ids[3], "actual": 1}]}, headers=labeller
            )
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "record_unavailable"
            assert "could not be written" not in a.log.read_text()  # not the inference log's
            database.start()
            after = _predict(a.url, client, model.rows[300:330])
            store = open_store(record_url)  # the test's own connection was cut too
            wait_until(lambda: store.counts()["served_champion"] == 230, "recording resumed")
            again = httpx.post(
                f"{b.url}/feedback",
                json={"rows": [{"id": after[0]["id"], "actual": model.targets[300]}]},
                headers=labeller,
            )
            assert again.json()["rows"][0]["outcome"] == "recorded", again.text
        assert "not recorded since the last warning (store_error" in a.log.read_text()


def test_the_embedded_record_survives_a_restart(tmp_path: Path) -> None:
    """SQLite (the embedded default of ``make serve``): a served row can be labelled after
    the server restarts, and a second report of it is a duplicate."""
    model = _model_and_users(tmp_path)
    env = server_env(
        tmp_path,
        model.tag,
        TABSERVE_JWT_SECRET=secrets.token_urlsafe(48),
        TABSERVE_RECORD_URL=f"sqlite:///{tmp_path / 'record.db'}",
        TABSERVE_RECORD_FLUSH_S="0.1",
    )
    with serving(env, tmp_path / "first.log") as served:
        answers = _predict(served.url, _token(served.url, "client"), model.rows[:10])
        # Right away: a row may still wait in the writer's queue; feedback waits for it.
        first = httpx.post(
            f"{served.url}/feedback",
            json={"rows": [{"id": answers[0]["id"], "actual": model.targets[0]}]},
            headers=_token(served.url, "labeller"),
        )
        assert first.json()["rows"][0]["outcome"] == "recorded", first.text
    with serving(env, tmp_path / "second.log") as served:
        labeller = _token(served.url, "labeller")
        later = httpx.post(
            f"{served.url}/feedback",
            json={
                "rows": [
                    {"id": answers[0]["id"], "actual": model.targets[0]},
                    {"id": answers[9]["id"], "actual": str(model.targets[9])},
                ]
            },
            headers=labeller,
        )
        assert [r["outcome"] for r in later.json()["rows"]] == ["duplicate", "recorded"]
    store = open_store(f"sqlite:///{tmp_path / 'record.db'}")
    assert store.counts() == {"served_champion": 10, "feedback": 2}
    labelled = {row.id: row for row in store.labelled()}
    assert labelled[answers[9]["id"]].actual == model.targets[9]  # "1" read as the class 1
    assert labelled[answers[9]["id"]].features == model.rows[9]


def test_a_restarted_database_is_reconnected_to_before_anything_is_lost() -> None:
    """A worker's connection to PostgreSQL outlives a restart of the server, cut: the next
    write, lookup and feedback go through a new one (the first write after a restart was
    lost, counted as a store error, by the worker that served nothing while it was down)."""
    from tabserve.record.rows import Served

    def call(request: str) -> Served:
        return Served(
            role="champion",
            model="v1",
            endpoint="predict",
            source="api",
            served_at=time.time(),
            names=("x",),
            rows=[{"x": 1.0}, {"x": 2.0}],
            answers=[
                {"id": f"{request}-{i}", "label": "a", "probabilities": {"a": 1.0}} for i in (0, 1)
            ],
        )

    with postgres_server() as database:
        store = open_store(database.create_database("record"), timeout_s=1)
        store.write_calls([call("before")])
        database.stop()
        database.start()
        store.write_calls([call("after")])  # on the connection the restart cut: reconnects
        assert set(store.served(["before-1", "after-0"])) == {"before-1", "after-0"}
        assert store.add_feedback([("after-0", "a")], time.time()) == set()
        assert store.counts() == {"served_champion": 4, "feedback": 1}
