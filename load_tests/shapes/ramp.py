"""Ramp load: from 1 to ``TABSERVE_RAMP_MAX`` users over ``TABSERVE_RAMP_SECONDS``, then hold.

Holds the peak for ``TABSERVE_RAMP_HOLD_SECONDS``, then stops. Defaults: 64 users
over 60 s, held 30 s.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class RampLoadShape(LoadTestShape):
    """Linear ramp to a peak, then a plateau."""

    max_users = int(os.environ.get("TABSERVE_RAMP_MAX", "64"))
    ramp_seconds = float(os.environ.get("TABSERVE_RAMP_SECONDS", "60"))
    hold_seconds = float(os.environ.get("TABSERVE_RAMP_HOLD_SECONDS", "30"))

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time >= self.ramp_seconds + self.hold_seconds:
            return None
        fraction = min(run_time / self.ramp_seconds, 1.0) if self.ramp_seconds > 0 else 1.0
        users = max(1, round(fraction * self.max_users))
        rate = max(1.0, self.max_users / self.ramp_seconds) if self.ramp_seconds > 0 else 100.0
        return users, rate
