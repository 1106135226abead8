"""Live evidence (issue 34, item 6): the figures, the paired tests and the decision, from a
snapshot alone and the same every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, wilcoxon

from tabserve.core.live_evidence import Snapshot, compare, decide_live
from tests.pipeline.test_default_pipeline import _live_rows


def test_classification_figures_intervals_and_mcnemar(tmp_path: Path) -> None:
    snapshot = Snapshot("v1", "v2", _live_rows(["benign", "malignant"], 240))
    snapshot.write(tmp_path / "live.json")
    again = Snapshot.read(tmp_path / "live.json")
    first, second = compare(snapshot), compare(again)
    assert first == second  # seeded: the same snapshot, the same numbers
    accuracy = next(f for f in first.figures if f.metric == "accuracy")
    assert (accuracy.champion, accuracy.shadow) == (0.7, 0.9)
    assert accuracy.champion_ci[0] < 0.7 < accuracy.champion_ci[1]
    assert accuracy.shadow_ci[0] < 0.9 < accuracy.shadow_ci[1]
    # 48 rows only the shadow got right, none only the champion: McNemar's exact test.
    assert first.p_value == pytest.approx(binomtest(0, 48, 0.5).pvalue)
    assert first.shadow_better and first.primary == "accuracy"
    verdict = decide_live(first, snapshot, "2", "1", 200, 0.05)
    assert verdict.promote and "significant at alpha=0.05" in verdict.reason
    assert not decide_live(first, snapshot, "2", "1", 500, 0.05).promote
    other = decide_live(first, snapshot, "3", "1", 200, 0.05)
    assert not other.promote and "no live evidence for challenger version 3" in other.reason


def test_regression_uses_wilcoxon_on_paired_absolute_errors() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=300)
    champion_values = truth + rng.normal(scale=1.0, size=300)
    shadow_values = truth + rng.normal(scale=0.9, size=300)

    def answer(value: float) -> dict:
        return {"value": value, "interval": {"low": value - 2, "high": value + 2, "coverage": 0.9}}

    rows = [
        {"id": f"{i}", "champion": answer(c), "shadow": answer(s), "actual": t}
        for i, (c, s, t) in enumerate(zip(champion_values, shadow_values, truth, strict=True))
    ]
    comparison = compare(Snapshot("v1", "v2", rows))
    expected = wilcoxon(np.abs(champion_values - truth), np.abs(shadow_values - truth)).pvalue
    assert comparison.primary == "mae" and comparison.p_value == pytest.approx(expected)
    assert {f.metric for f in comparison.figures} == {"rmse", "mae", "coverage"}


def test_no_rows_decide_nothing() -> None:
    empty = Snapshot(None, None, [])
    comparison = compare(empty)
    assert comparison.rows == 0 and comparison.p_value == 1.0
    assert not decide_live(comparison, empty, "2", "1", 1, 0.05).promote
