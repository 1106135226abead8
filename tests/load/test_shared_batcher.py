"""The benchmark's ``shared-batcher`` contender, served for real: two HTTP workers of
tabserve in front of one batching model process (``bentoml.depends``).

What ``make bench`` compares must answer like the service it is compared with: the
same answers as the model in process, every request of a concurrent burst answered,
the service's own validation errors, and the model process merging requests from both
workers into fewer model calls, counted where the bench reads them. (The requests that
BentoML's dependency client drops when it replaces its session, which the contender
prevents, showed under the heavy profile's load, not reliably with this small model.)
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from load_tests.payloads import bundle_dir, load_rows
from load_tests.scrape import SHARED_MODEL_ENDPOINT, batches
from tabserve.core.predictor import Predictor
from tabserve.security.users import UserStore
from tests.support import cheap_hasher, import_test_model, server_env, serving

pytestmark = pytest.mark.slow

REQUESTS = 240
CONCURRENT = 16


def test_shared_batcher_answers_like_the_model_and_batches_across_workers(
    tmp_path: Path,
) -> None:
    from sklearn.datasets import load_breast_cancer

    home = tmp_path / "bentoml"
    model = import_test_model(
        home, load_breast_cancer(as_frame=True).frame, "target", {"objective": "binary:logistic"}
    )
    directory = bundle_dir(home, model.tag)
    examples = load_rows(directory)
    rows = [examples[i % len(examples)] for i in range(REQUESTS)]
    expected = Predictor.from_files(directory, version="v1").predict(rows)
    password = secrets.token_urlsafe(12)
    UserStore(tmp_path / "users.json", hasher=cheap_hasher()).add("bench", password, "predict")
    env = server_env(
        tmp_path, model.tag, TABSERVE_JWT_SECRET=secrets.token_urlsafe(48), TABSERVE_WORKERS="2"
    )
    target = "load_tests.baselines.shared_batcher_service:SharedBatcher"
    with serving(env, tmp_path / "serve.log", target=target) as served:
        token = httpx.post(
            f"{served.url}/auth/token", data={"username": "bench", "password": password}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        before = batches(served.url, SHARED_MODEL_ENDPOINT)

        def predict(row: dict[str, object]) -> httpx.Response:
            return httpx.post(
                f"{served.url}/predict", json={"rows": [row]}, headers=headers, timeout=30
            )

        with ThreadPoolExecutor(CONCURRENT) as pool:
            answers = list(pool.map(predict, rows))
        formed = batches(served.url, SHARED_MODEL_ENDPOINT) - before
        bad = [r.text[:300] for r in answers if r.status_code != 200]
        assert not bad, (len(bad), bad[0], served.log.read_text()[-3000:])
        # Each request's rows reached the model process, merged into fewer model calls.
        assert formed.rows == len(rows)
        assert 0 < formed.calls < len(rows), formed
        for response, wanted in zip(answers, expected, strict=True):
            (got,) = response.json()
            assert got["label"] == wanted["label"]
            assert got["probabilities"] == pytest.approx(wanted["probabilities"], abs=1e-6)
        invalid = httpx.post(f"{served.url}/predict", json={"rows": [{"nope": 1}]}, headers=headers)
        assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "validation_error"
