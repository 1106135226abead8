"""Step load: add ``TABSERVE_STEP_USERS`` users every ``TABSERVE_STEP_SECONDS`` seconds.

Up to ``TABSERVE_STEP_MAX`` users, then holds the last step for one more step and
stops. Defaults: 8 users every 15 s up to 64 (about 2 min 15 s).
"""

from __future__ import annotations

import os

from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    """Staircase of concurrent users; each step is long enough for stable percentiles."""

    step_users = int(os.environ.get("TABSERVE_STEP_USERS", "8"))
    step_seconds = float(os.environ.get("TABSERVE_STEP_SECONDS", "15"))
    max_users = int(os.environ.get("TABSERVE_STEP_MAX", "64"))

    def tick(self) -> tuple[int, float] | None:
        steps = -(-self.max_users // self.step_users)  # ceil
        run_time = self.get_run_time()
        if run_time >= (steps + 1) * self.step_seconds:
            return None
        step = min(int(run_time // self.step_seconds) + 1, steps)
        return min(step * self.step_users, self.max_users), float(self.step_users)
