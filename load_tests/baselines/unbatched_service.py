"""Contender 2: the tabserve service, unchanged, with adaptive batching switched off.

BentoML fixes ``batchable`` in the ``@bentoml.api`` decorator and refuses a
``max_batch_size`` below 2 (a batch size of 1 would also split every multi-row
request into one model call per row, which is not "batching off"). This module
imports the very same service and marks ``predict`` as not batchable before
``bentoml serve`` builds its app, so each request is one model call with its own
rows: the honest "batching off". ::

    bentoml serve load_tests.baselines.unbatched_service:Tabserve
"""

from __future__ import annotations

from service import SERVICE, Tabserve

for _method in SERVICE.apis.values():
    _method.batchable = False

__all__ = ["Tabserve"]
