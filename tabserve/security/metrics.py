"""The security layer's Prometheus metrics: login attempts and revoked tokens refused.

``prometheus_client`` is imported when the metrics are first created, never at module
import (see :mod:`tabserve.serving.metrics` for why).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

_LOCK = threading.Lock()
_AUTH_METRICS: AuthMetrics | None = None
# The outcomes of a login attempt (``tabserve_login_attempts_total{outcome}``).
LOGIN_OUTCOMES = ("success", "failure", "throttled", "busy")


@dataclass(frozen=True)
class AuthMetrics:
    """Login and revocation counters (what the auth dashboards and alerts read)."""

    login_attempts: Any
    revoked_rejected: Any

    def login(self, outcome: str) -> None:
        """Count one login attempt: ``success``, ``failure`` (wrong password or unknown
        user, after the hash), ``throttled`` (too many failures) or ``busy`` (refused
        because every verification slot stayed taken)."""
        self.login_attempts.labels(outcome=outcome).inc()

    def revoked(self) -> None:
        """Count one request refused because its token was revoked."""
        self.revoked_rejected.inc()


def auth_metrics() -> AuthMetrics:
    """The process's :class:`AuthMetrics`, created on first use (never at import)."""
    global _AUTH_METRICS
    with _LOCK:
        if _AUTH_METRICS is None:
            from prometheus_client import Counter

            attempts = Counter(
                "tabserve_login_attempts",
                "Login attempts (token endpoint and UI), by outcome",
                labelnames=["outcome"],
            )
            for outcome in LOGIN_OUTCOMES:  # every series exists from the start, at 0
                attempts.labels(outcome=outcome)
            _AUTH_METRICS = AuthMetrics(
                login_attempts=attempts,
                revoked_rejected=Counter(
                    "tabserve_revoked_tokens_rejected",
                    "Requests refused because their token (or its subject) was revoked",
                ),
            )
        return _AUTH_METRICS
