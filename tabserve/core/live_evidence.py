"""Live evidence: the champion and a shadow challenger on the same labelled served rows,
each metric with a confidence interval, and a paired test of their difference.

A snapshot (``evidence/live.json``, written by ``tabserve live-report --snapshot``) holds
the rows themselves: every row both models answered and whose truth came back, sorted by
id. Everything here is a pure function of it (the bootstrap is seeded), so the pipeline's
``promote`` stage makes the same decision from the same snapshot every time.

- Classification: accuracy (the primary metric) with McNemar's exact test on the rows
  one model got right and the other wrong; log loss with a paired bootstrap interval of
  the difference.
- Regression: MAE (primary) with Wilcoxon's signed-rank test on the paired absolute
  errors; RMSE and interval coverage with bootstrap intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest, wilcoxon

from tabserve.core.quality import classification_quality, regression_quality

BOOTSTRAP_ROUNDS = 1000
SEED = 0
EMPTY: dict[str, Any] = {"champion": None, "shadow": None, "rows": []}


@dataclass(frozen=True)
class Snapshot:
    """The labelled rows both models answered.

    Attributes:
        champion: the champion's model version (None: no rows).
        shadow: the shadow's model version.
        rows: ``{"id", "champion": answer, "shadow": answer, "actual"}``, sorted by id.
    """

    champion: str | None
    shadow: str | None
    rows: list[dict[str, Any]]

    @classmethod
    def read(cls, path: Path) -> Snapshot:
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else EMPTY
        return cls(data["champion"], data["shadow"], list(data["rows"]))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"champion": self.champion, "shadow": self.shadow, "rows": self.rows}
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")

    @property
    def regression(self) -> bool:
        return bool(self.rows) and "value" in self.rows[0]["champion"]


@dataclass(frozen=True)
class Figure:
    """One metric of both models, with 95 % bootstrap intervals."""

    metric: str
    champion: float
    champion_ci: tuple[float, float]
    shadow: float
    shadow_ci: tuple[float, float]
    higher_is_better: bool


@dataclass(frozen=True)
class Comparison:
    """Both models on the snapshot's rows.

    Attributes:
        rows: how many labelled rows.
        figures: each metric of both models.
        primary: the metric the test is about (``accuracy`` or ``mae``).
        test: the paired test's name.
        p_value: its two-sided p-value (1.0 without rows or without any difference).
        shadow_better: whether the shadow is better on the primary metric.
    """

    rows: int
    figures: list[Figure]
    primary: str
    test: str
    p_value: float
    shadow_better: bool


def _quality_of(answers: list[dict[str, Any]], actual: list[Any]) -> Any:
    """A function of row positions giving every metric of ``answers`` on those rows,
    on arrays built once (the bootstrap calls it a thousand times)."""
    if "value" in answers[0]:
        values = np.array([a["value"] for a in answers], dtype=np.float64)
        lows = np.array([a["interval"]["low"] for a in answers], dtype=np.float64)
        highs = np.array([a["interval"]["high"] for a in answers], dtype=np.float64)
        truth = np.array(actual, dtype=np.float64)
        return lambda p: regression_quality(values[p], lows[p], highs[p], truth[p])
    keys = list(answers[0]["probabilities"])
    proba = np.array([[a["probabilities"][k] for k in keys] for a in answers])
    labels = np.array([str(t) for t in actual], dtype=object)
    return lambda p: classification_quality(keys, proba[p], list(labels[p]))


def _intervals(of: Any, n: int, rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """95 % percentile bootstrap intervals of every metric ``of`` gives."""
    if n < 2:
        return {}
    samples = [of(rng.integers(0, n, size=n)) for _ in range(BOOTSTRAP_ROUNDS)]
    intervals = {}
    for metric in samples[0]:
        low, high = np.nanpercentile([s.get(metric, np.nan) for s in samples], [2.5, 97.5])
        intervals[metric] = (float(low), float(high))
    return intervals


def compare(snapshot: Snapshot) -> Comparison:
    """Both models' figures on the snapshot's rows, and the paired test of the primary
    metric (seeded: the same snapshot gives the same numbers)."""
    rows = snapshot.rows
    rng = np.random.default_rng(SEED)
    if snapshot.regression:
        primary, test = "mae", "Wilcoxon signed-rank test on the paired absolute errors"
    else:
        primary, test = "accuracy", "McNemar's exact test on the discordant rows"
    if not rows:
        return Comparison(0, [], primary, test, 1.0, False)
    actual = [r["actual"] for r in rows]
    everything = np.arange(len(rows))
    of_champion = _quality_of([r["champion"] for r in rows], actual)
    of_shadow = _quality_of([r["shadow"] for r in rows], actual)
    champion, shadow = of_champion(everything), of_shadow(everything)
    champion_ci = _intervals(of_champion, len(rows), rng)
    shadow_ci = _intervals(of_shadow, len(rows), rng)
    nan = (float("nan"), float("nan"))
    figures = [
        Figure(
            metric,
            champion[metric],
            champion_ci.get(metric, nan),
            shadow.get(metric, float("nan")),
            shadow_ci.get(metric, nan),
            metric in ("accuracy", "roc_auc", "coverage"),
        )
        for metric in champion
    ]
    if snapshot.regression:
        truth = np.array(actual, dtype=np.float64)
        mine = np.abs(np.array([r["champion"]["value"] for r in rows]) - truth)
        theirs = np.abs(np.array([r["shadow"]["value"] for r in rows]) - truth)
        differs = mine != theirs
        p_value = float(wilcoxon(mine[differs], theirs[differs]).pvalue) if differs.any() else 1.0
        better = shadow["mae"] < champion["mae"]
    else:
        right_c = np.array([str(r["champion"]["label"]) == str(r["actual"]) for r in rows])
        right_s = np.array([str(r["shadow"]["label"]) == str(r["actual"]) for r in rows])
        b = int(np.sum(right_c & ~right_s))  # only the champion right
        c = int(np.sum(~right_c & right_s))  # only the shadow right
        p_value = float(binomtest(min(b, c), b + c, 0.5).pvalue) if b + c else 1.0
        better = c > b
    return Comparison(len(rows), figures, primary, test, p_value, better)


@dataclass(frozen=True)
class LiveDecision:
    """Whether live evidence says the challenger should become champion, and why."""

    promote: bool
    reason: str


def decide_live(
    comparison: Comparison,
    snapshot: Snapshot,
    challenger: str,
    champion: str | None,
    min_rows: int,
    alpha: float,
) -> LiveDecision:
    """Promote when the snapshot holds the registered challenger (as the shadow) against
    the registered champion, on at least ``min_rows`` labelled rows, and the challenger is
    better on the primary metric with the paired test's p-value under ``alpha``.

    ``challenger`` and ``champion`` are registry versions; the snapshot names BentoML
    versions (``v<registry version>``).
    """
    if snapshot.shadow != f"v{challenger}" or snapshot.champion != f"v{champion}":
        return LiveDecision(
            False,
            f"no live evidence for challenger version {challenger} against champion "
            f"version {champion}: the snapshot holds shadow {snapshot.shadow} against "
            f"champion {snapshot.champion}",
        )
    if comparison.rows < min_rows:
        return LiveDecision(
            False,
            f"{comparison.rows} labelled live rows, fewer than promote.min_live_rows={min_rows}",
        )
    figure = next(f for f in comparison.figures if f.metric == comparison.primary)
    numbers = (
        f"live {comparison.primary}: challenger {figure.shadow:.4f} vs champion "
        f"{figure.champion:.4f} on {comparison.rows} rows, p={comparison.p_value:.4g} "
        f"({comparison.test})"
    )
    if not comparison.shadow_better:
        return LiveDecision(False, f"the challenger is not better: {numbers}")
    if comparison.p_value >= alpha:
        return LiveDecision(False, f"not significant at alpha={alpha}: {numbers}")
    return LiveDecision(True, f"the challenger is better, significant at alpha={alpha}: {numbers}")
