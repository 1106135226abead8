"""A BentoML service whose one sync API outlives ``traffic.timeout`` and then fails, with
tabserve's fix of BentoML's request timeout applied (bentoml/BentoML#5642's case).

``bentoml serve tests.service.slow_service:Slow``: ``POST /slow`` sleeps past the 2 s
timeout and then raises; ``POST /peak`` tells how many ``/slow`` handlers ever ran at once
(one thread, ``threads=1``: never more than one, if the slot is held to the end).
"""

from __future__ import annotations

import threading
import time

import bentoml

from tabserve.serving import bentoml_fixes

bentoml_fixes.apply()

_lock = threading.Lock()
_running = 0
_peak = 0


@bentoml.service(name="slow", traffic={"timeout": 2}, threads=1, workers=1)
class Slow:
    """One sync API that runs past the timeout, and a way to read what it saw."""

    @bentoml.api
    def slow(self, seconds: float = 4.0) -> str:
        """Sleep ``seconds`` in the one thread, then fail."""
        global _running, _peak
        with _lock:
            _running += 1
            _peak = max(_peak, _running)
        try:
            time.sleep(seconds)
        finally:
            with _lock:
                _running -= 1
        raise RuntimeError("boom after the timeout")

    @bentoml.api
    async def peak(self) -> int:
        """The most ``/slow`` handlers that ever ran at once."""
        return _peak
