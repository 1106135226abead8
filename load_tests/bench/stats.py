"""Statistics over rounds (medians and spreads of ratios) and the targets' checks."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from load_tests.bench.common import (
    AFTER_BURST,
    KEEP_TARGETS,
    LOW_LOAD_P50_SLACK_MS,
    P99_TARGETS_MS,
    RATIO_TARGETS,
    SHADOW_P50_SLACK_MS,
    SINGLE_ROWS,
    TARGET_USERS,
    RunResult,
)


# ---- aggregation over rounds ---------------------------------------------------------
def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23×``, or n/a."""
    return f"{a / b:.2f}×" if b > 0 and a > 0 else "n/a"


@dataclass(frozen=True)
class Spread:
    """The median and range of one number over the rounds."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread | None:
        """None when there is no value."""
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, unit: str = "", digits: int = 0) -> str:
        """``1.23× (1.10-1.31)``: the median, and the range when there are several rounds."""
        middle = f"{self.median:,.{digits}f}{unit}"
        if self.n < 2:
            return middle
        return f"{middle} ({self.low:,.{digits}f}–{self.high:,.{digits}f})"


def good(results: list[RunResult]) -> list[RunResult]:
    """Runs that produced numbers."""
    return [r for r in results if not r.error and r.requests > 0]


def runs_of(
    results: list[RunResult], profile: str, contender: str, users: int, phase: str = "load"
) -> list[RunResult]:
    """The runs of one cell of the report, over every round."""
    return [
        r
        for r in results
        if (r.profile, r.contender, r.users, r.phase) == (profile, contender, users, phase)
    ]


def ratio_spread(
    results: list[RunResult],
    profile: str,
    users: int,
    other: str,
    mine: str = "batched",
    phase: str = "load",
    attr: str = "rps",
) -> Spread | None:
    """``mine ÷ other`` throughput (or another number of the runs, ``attr``) per round
    (side by side), over the rounds."""
    values = []
    for round_ in sorted({r.round for r in results}):
        a, b = (
            [
                getattr(r, attr)
                for r in good(runs_of(results, profile, name, users, phase))
                if r.round == round_ and getattr(r, attr)
            ]
            for name in (mine, other)
        )
        if a and b:
            values.append(a[0] / b[0])
    return Spread.of(values)


def metric(results: list[RunResult], attr: str) -> Spread | None:
    """The spread of one attribute of some runs."""
    return Spread.of([float(getattr(r, attr)) for r in good(results)])


# ---- targets -------------------------------------------------------------------------
Check = tuple[str, bool | None, str]


def targets(results: list[RunResult], profile: str) -> list[Check]:
    """Issue 16's targets on one profile: (description, met?, measured)."""
    checks: list[Check] = []
    levels = sorted({r.users for r in results if r.profile == profile and r.phase == "load"})
    for users in (u for u in TARGET_USERS if u in levels):
        cells = [r for r in results if (r.profile, r.users, r.phase) == (profile, users, "load")]
        failed: dict[str, int] = {}
        for r in cells:
            if r.contender != "constant":
                failed[r.contender] = failed.get(r.contender, 0) + r.failures
        errors = sorted({r.contender for r in cells if r.error})
        checks.append(
            (
                f"{users} users: zero failed requests (every contender, every round)",
                not errors and all(v == 0 for v in failed.values()),
                ", ".join(f"{c} {v}" for c, v in failed.items())
                + (f"; errors: {', '.join(errors)}" if errors else ""),
            )
        )
    for other, wanted, at in RATIO_TARGETS.get(profile, []):
        for users in (u for u in at if u in levels):
            spread = ratio_spread(results, profile, users, other)
            checks.append(
                (
                    f"{users} users: batched ≥ {wanted}× {other} throughput",
                    None if spread is None else spread.median >= wanted,
                    "n/a" if spread is None else spread.text("×", 2),
                )
            )
    for mine, wanted, at in KEEP_TARGETS.get(profile, []):
        for users in (u for u in at if u in levels):
            spread = ratio_spread(results, profile, users, "batched", mine=mine)
            checks.append(
                (
                    f"{users} users: {mine} keeps ≥ {wanted:.0%} of batched's throughput",
                    None if spread is None else spread.median >= wanted,
                    "n/a" if spread is None else spread.text("×", 2),
                )
            )
    if profile in P99_TARGETS_MS:
        users, limit = P99_TARGETS_MS[profile]
        p99 = metric(runs_of(results, profile, "batched", users), "p99")
        if p99 is not None:
            checks.append(
                (
                    f"{users} users: batched p99 ≤ {limit:.0f} ms",
                    p99.median <= limit,
                    p99.text(" ms"),
                )
            )
    for users in sorted(
        {r.users for r in results if (r.profile, r.phase) == (profile, SINGLE_ROWS)}
    ):
        spread = ratio_spread(results, profile, users, "unbatched", phase=SINGLE_ROWS)
        wanted = max(
            (w for o, w, _ in RATIO_TARGETS.get(profile, []) if o == "unbatched"), default=0
        )
        checks.append(
            (
                f"{users} users, single-row requests only: batched ≥ {wanted}× unbatched "
                "throughput",
                None if spread is None else spread.median >= wanted,
                "n/a" if spread is None else spread.text("×", 2),
            )
        )
    batched = metric(runs_of(results, profile, "batched", 1, AFTER_BURST), "p50")
    shadow = metric(runs_of(results, profile, "shadow", 1, AFTER_BURST), "p50")
    if batched is not None and shadow is not None:
        checks.append(
            (
                "1 user right after the burst: shadow p50 ≤ batched p50 + "
                f"{SHADOW_P50_SLACK_MS} ms",
                shadow.median <= batched.median + SHADOW_P50_SLACK_MS,
                f"shadow {shadow.text(' ms', 1)}, batched {batched.text(' ms', 1)}",
            )
        )
    unbatched = metric(runs_of(results, profile, "unbatched", 1, AFTER_BURST), "p50")
    if batched is not None and unbatched is not None:
        checks.append(
            (
                f"1 user right after the burst: batched p50 ≤ unbatched p50 + "
                f"{LOW_LOAD_P50_SLACK_MS} ms",
                batched.median <= unbatched.median + LOW_LOAD_P50_SLACK_MS,
                f"batched {batched.text(' ms', 1)}, unbatched {unbatched.text(' ms', 1)}",
            )
        )
    return checks
