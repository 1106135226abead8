"""The serving worker's heap: what start-up loaded is frozen out of garbage collection.

A worker imports BentoML, pandas, Plotly and Gradio and builds the model and the UI:
a quarter of a million long-lived objects or more. Every full (generation 2)
collection walks all of them, about 150 ms on these machines, while the event loop
stands still and every request in flight waits. :func:`freeze_startup_heap` moves
everything alive at the end of start-up to the permanent generation
(:func:`gc.freeze`), so later collections only walk what requests create. Measured
by ``make bench`` (docs/benchmark.md): it removed the periodic ~300 ms stalls that made
p95/p99 latency several times the median.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger("tabserve.heap")


def freeze_startup_heap() -> int:
    """Collect once, then freeze every surviving object; return how many are frozen.

    Safe to call more than once (each call freezes what was created since).
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.debug("froze %d start-up objects out of garbage collection", frozen)
    return frozen
