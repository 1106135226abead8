"""Data validation and splitting (the pure core of the prepare stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.errors import DataError
from training.params import DataParams, PrepareParams
from training.prepare import prepare, validate, write_prepared

PARAMS = PrepareParams(test_size=0.2, valid_size=0.25, min_rows_per_class=5)
DATA = DataParams(source="unused.csv", target="y")


def frame(n: int = 60, classes: tuple[object, ...] = ("a", "b")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "cat": rng.choice(["u", "v", "w"], size=n),
            "y": [classes[i % len(classes)] for i in range(n)],
        }
    )


def test_split_is_stratified_seeded_and_disjoint() -> None:
    data = frame(100, ("a", "b", "c"))
    first = prepare(data, DATA, PARAMS, seed=7)
    second = prepare(data, DATA, PARAMS, seed=7)
    for name in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
        assert set(getattr(first, name)["y"]) == {"a", "b", "c"}
    sizes = [len(first.train), len(first.valid), len(first.test)]
    assert sum(sizes) == 100 and sizes[2] == 20
    keys = [
        set(map(tuple, getattr(first, n).to_numpy().tolist())) for n in ("train", "valid", "test")
    ]
    assert not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    other = prepare(data, DATA, PARAMS, seed=8)
    assert not first.test.equals(other.test)


def test_target_missing_names_the_column_and_lists_columns() -> None:
    with pytest.raises(DataError, match="target column 'label' not found") as err:
        validate(frame(), "label", 5)
    assert "x, cat, y" in str(err.value)


def test_one_class_only_is_refused() -> None:
    with pytest.raises(DataError, match=r"has 1 class\(es\)"):
        validate(frame(classes=("a",)), "y", 5)


def test_too_few_rows_in_a_class_names_the_class() -> None:
    data = frame(40)
    data.loc[:2, "y"] = "rare"
    with pytest.raises(DataError, match="class 'rare' of 'y' has 3 rows; need at least 5"):
        validate(data, "y", 5)


def test_missing_labels_name_the_rows() -> None:
    data = frame(40)
    data.loc[[3, 17], "y"] = None
    with pytest.raises(DataError, match="missing in rows 3, 17"):
        validate(data, "y", 5)


def test_infinite_values_name_column_and_rows() -> None:
    data = frame(40)
    data.loc[5, "x"] = np.inf
    with pytest.raises(DataError, match="column 'x' has infinite values in rows 5"):
        validate(data, "y", 5)


def test_duplicate_column_names_are_refused() -> None:
    data = frame(40)
    data.columns = ["x", "x", "y"]
    with pytest.raises(DataError, match="column 'x' appears more than once"):
        validate(data, "y", 5)


def test_every_problem_is_reported_at_once() -> None:
    data = frame(40)
    data.loc[0, "x"] = -np.inf
    data.loc[1, "y"] = None
    with pytest.raises(DataError) as err:
        validate(data, "y", 5)
    assert len(err.value.problems) == 2


def test_id_column_is_dropped_and_missing_values_survive(caplog) -> None:
    data = frame(60)
    data.insert(0, "Unnamed: 0", range(60))
    data.loc[[1, 2], "x"] = np.nan
    data.loc[[4], "cat"] = None
    prepared = prepare(data, DATA, PARAMS, seed=1)
    assert "Unnamed: 0" not in prepared.train.columns
    assert prepared.schema.feature("x").nullable and prepared.schema.feature("cat").nullable
    assert "dropping column 'Unnamed: 0'" in caplog.text


def test_write_prepared_writes_all_outputs(tmp_path) -> None:
    prepared = prepare(frame(60), DATA, PARAMS, seed=1)
    write_prepared(prepared, tmp_path / "prepared")
    names = sorted(p.name for p in (tmp_path / "prepared").iterdir())
    assert names == [
        "feature_scores.json",
        "report.json",
        "schema.json",
        "test.parquet",
        "train.parquet",
        "valid.parquet",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")]


def leaky(n: int = 300) -> pd.DataFrame:
    """A label, a noisy copy of it, a column missing for one class only, honest noise."""
    rng = np.random.default_rng(3)
    data = frame(n)
    label = (data["y"] == "b").astype(float)
    data["copy"] = label + rng.normal(0, 0.05, n)
    data["after"] = np.where(data["y"] == "a", np.nan, rng.normal(size=n))
    return data


def test_leaky_features_stop_the_stage_naming_both_and_the_ways_out() -> None:
    with pytest.raises(DataError, match="suspected label leakage") as err:
        prepare(leaky(), DATA, PARAMS, seed=1)
    problems = err.value.problems
    assert any(
        "feature 'copy': alone it predicts the target with ROC AUC 1.0" in p for p in problems
    )
    assert any(
        "feature 'after'" in p and "whether it is missing alone separates class 'a'" in p
        for p in problems
    )
    assert not any("'x'" in p or "'cat'" in p for p in problems)
    assert any("prepare.allow: ['copy', 'after']" in p for p in problems)
    assert any("data.drop: ['copy', 'after']" in p for p in problems)


def test_allowed_and_dropped_features_let_the_stage_through(caplog) -> None:
    params = PARAMS.model_copy(update={"allow": ["after"]})
    data = DataParams(source="unused.csv", target="y", drop=["copy"])
    prepared = prepare(leaky(), data, params, seed=1)
    assert prepared.schema.feature_names == ["x", "cat", "after"]
    assert prepared.schema.dropped[0].model_dump() == {
        "name": "copy",
        "reason": "dropped by data.drop",
    }
    assert "allowed by prepare.allow: feature 'after'" in caplog.text
    report = prepared.report()
    scores = {s["feature"]: s for s in report["leakage"]["features"]}
    assert scores["after"]["missing_score"] == 1.0 and scores["x"]["score"] < 0.8
    assert report["leakage"]["allowed"] == ["after"]


def test_features_keeps_only_the_named_columns_and_unknown_names_are_refused() -> None:
    data = DataParams(source="unused.csv", target="y", features=["x"])
    prepared = prepare(leaky(), data, PARAMS, seed=1)
    assert prepared.schema.feature_names == ["x"]
    assert {d.name for d in prepared.schema.dropped} == {"cat", "copy", "after"}
    with pytest.raises(DataError, match=r"the data does not have: \['nope'\]") as err:
        prepare(frame(), DataParams(source="s.csv", target="y", drop=["nope"]), PARAMS, seed=1)
    assert "columns are: x, cat, y" in str(err.value)
    with pytest.raises(DataError, match=r"prepare\.allow names column"):
        prepare(frame(), DATA, PARAMS.model_copy(update={"allow": ["nope"]}), seed=1)


def test_quality_findings_are_reported_without_stopping(caplog) -> None:
    data = frame(200)
    data["sparse"] = np.where(np.arange(200) % 3 == 0, 1.0, np.nan)
    data["constant"] = "same"
    data = pd.concat([data, data.iloc[:10]], ignore_index=True)  # duplicate rows
    prepared = prepare(data, DATA, PARAMS, seed=1)
    quality = prepared.report()["quality"]
    assert quality["mostly_missing"] == {"sparse": pytest.approx(0.662, abs=0.001)}
    assert quality["duplicate_rows"] == 10
    assert "constant" not in prepared.schema.feature_names
    assert "dropping column 'constant': constant" in caplog.text
    assert "data quality: column 'sparse' is 66% missing" in caplog.text
    assert "duplicate row(s)" in caplog.text
