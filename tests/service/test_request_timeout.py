"""bentoml/BentoML#5642 against a real ``bentoml serve``: a sync handler that outlives
``traffic.timeout``. The client gets its 504 envelope at the timeout; the handler's
later error is still logged, and its thread slot is held until it really ends, so the
next request does not run beside it (``threads=1``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import child_env, serving

pytestmark = pytest.mark.slow


def test_a_sync_handler_that_outlives_the_timeout_is_logged_and_holds_its_slot(
    tmp_path: Path,
) -> None:
    env = {**child_env(), "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    log = tmp_path / "serve.log"
    with serving(env, log, target="tests.service.slow_service:Slow", wait_for="/livez") as served:
        answers: dict[str, httpx.Response] = {}

        def call(name: str) -> None:
            answers[name] = httpx.post(f"{served.url}/slow", json={"seconds": 4}, timeout=30)

        first = threading.Thread(target=call, args=("first",))
        started = time.monotonic()
        first.start()
        time.sleep(2.5)  # the first has timed out (2 s) and still runs (4 s)
        second = threading.Thread(target=call, args=("second",))
        second.start()
        first.join()
        timed_out_after = time.monotonic() - started
        second.join()
        peak = httpx.post(f"{served.url}/peak", json={}).json()
        time.sleep(0.5)
        text = log.read_text()
    assert answers["first"].status_code == 504
    assert answers["first"].json()["error"]["code"] == "timeout"
    assert timed_out_after < 3.5  # answered at the timeout, not when the handler ended
    assert peak == 1, "the second request ran beside the first one's thread"
    assert text.count("boom after the timeout") >= 1, text[-3000:]
