"""What the service's own ``/metrics`` says about the batches it formed.

Plain Python (no gevent), shared by the benchmark and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

# The ``endpoint`` label under which the bench's ``shared-batcher`` contender counts the
# rows of each model call, in its model process (its HTTP workers count each request's
# under ``predict``).
SHARED_MODEL_ENDPOINT = "model"


@dataclass(frozen=True)
class Batches:
    """Totals of the ``tabserve_batch_rows`` histogram for one endpoint so far."""

    calls: float  # model calls (batches)
    rows: float  # rows over all of them
    single: float  # calls that held exactly one row

    def __sub__(self, before: Batches) -> Batches:
        return Batches(
            self.calls - before.calls, self.rows - before.rows, self.single - before.single
        )


def batches(url: str, endpoint: str = "predict", timeout: float = 5.0) -> Batches:
    """Scrape ``{url}/metrics`` for the rows-per-batch histogram of ``endpoint``."""
    # Imported here: in the test process prometheus_client must first be imported
    # after PROMETHEUS_MULTIPROC_DIR is set, or the in-process app's /metrics is empty.
    from prometheus_client.parser import text_string_to_metric_families

    calls = rows = single = 0.0
    text = httpx.get(f"{url}/metrics", timeout=timeout).text
    for family in text_string_to_metric_families(text):
        if family.name != "tabserve_batch_rows":
            continue
        for sample in family.samples:
            if sample.labels.get("endpoint") != endpoint:
                continue
            if sample.name.endswith("_count"):
                calls += sample.value
            elif sample.name.endswith("_sum"):
                rows += sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] == "1.0":
                single += sample.value
    return Batches(calls, rows, single)
