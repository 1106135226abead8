"""Data validation and splitting (the pure core of the prepare stage)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.errors import DataError
from training.params import PrepareParams
from training.prepare import prepare, validate, write_prepared

PARAMS = PrepareParams(test_size=0.2, valid_size=0.25, min_rows_per_class=5)


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
    first = prepare(data, "y", PARAMS, seed=7)
    second = prepare(data, "y", PARAMS, seed=7)
    for name in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
        assert set(getattr(first, name)["y"]) == {"a", "b", "c"}
    sizes = [len(first.train), len(first.valid), len(first.test)]
    assert sum(sizes) == 100 and sizes[2] == 20
    keys = [
        set(map(tuple, getattr(first, n).to_numpy().tolist())) for n in ("train", "valid", "test")
    ]
    assert not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    other = prepare(data, "y", PARAMS, seed=8)
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
    prepared = prepare(data, "y", PARAMS, seed=1)
    assert "Unnamed: 0" not in prepared.train.columns
    assert prepared.schema.feature("x").nullable and prepared.schema.feature("cat").nullable
    assert "dropping column 'Unnamed: 0'" in caplog.text


def test_write_prepared_writes_all_outputs(tmp_path) -> None:
    prepared = prepare(frame(60), "y", PARAMS, seed=1)
    write_prepared(prepared, tmp_path / "prepared")
    names = sorted(p.name for p in (tmp_path / "prepared").iterdir())
    assert names == ["report.json", "schema.json", "test.parquet", "train.parquet", "valid.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".prepare-")]
