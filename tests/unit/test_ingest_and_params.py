"""Reading sources and validating params.yaml."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from training.errors import DataError
from training.ingest import ingest, read_table
from training.params import load_params
from training.promote import decide

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_ships_inside_a_package() -> None:
    data = ingest("breast_cancer", ROOT)
    assert data.shape == (569, 31)
    # The dataset's own class names, so that an answer reads without a codebook.
    assert data["target"].value_counts().to_dict() == {"benign": 357, "malignant": 212}
    assert set(ingest("iris", ROOT)["target"]) == {"setosa", "versicolor", "virginica"}


def test_csv_and_parquet_sources(tmp_path: Path) -> None:
    data = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    data.to_csv(tmp_path / "d.csv", index=False)
    data.to_parquet(tmp_path / "d.parquet")
    assert read_table(tmp_path / "d.csv").shape == (2, 2)
    assert read_table(tmp_path / "d.parquet")["b"].tolist() == ["x", "y"]
    assert ingest("d.csv", tmp_path).shape == (2, 2)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("dupes.csv", b"a,b,a\n1,2,3\n", "duplicate column names: a"),
        ("binary.csv", b"\xff\xfe\x00\x01garbage\x00", "could not be read"),
        ("corrupt.parquet", b"not a parquet file", "could not be read"),
        ("empty.csv", b"a,b\n", "has no rows"),
        ("data.xlsx", b"whatever", "unsupported file type"),
    ],
)
def test_bad_sources_are_refused_with_the_file_named(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_table(tmp_path / name)
    assert name in str(err.value)


def test_repo_params_are_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "breast_cancer"
    assert params.tune.n_trials >= 1


def test_params_typo_is_an_error(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"]["n_trails"] = raw["tune"].pop("n_trials")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="n_trails"):
        load_params(tmp_path / "params.yaml")


def test_params_bad_range_is_an_error(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["tune"]["space"]["max_depth"] = {"low": 9, "high": 2, "type": "int"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValidationError, match="must be below high"):
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "promoted"),
    [
        ("roc_auc", 0.95, 0.94, True),
        ("roc_auc", 0.95, 0.95, True),  # at least as good
        ("roc_auc", 0.93, 0.94, False),
        ("log_loss", 0.20, 0.25, True),  # lower is better
        ("log_loss", 0.30, 0.25, False),
    ],
)
def test_promotion_rule(metric: str, challenger: float, champion: float, promoted: bool) -> None:
    decision = decide(metric, "2", challenger, "1", champion)
    assert decision.promoted is promoted
    assert decision.champion_after == ("2" if promoted else "1")
    assert metric in decision.reason


def test_first_model_and_incomparable_champion_are_promoted() -> None:
    assert decide("f1", "1", 0.5, None, None).promoted
    incomparable = decide("f1", "3", 0.5, "2", None, comparable=False)
    assert incomparable.promoted and "another schema" in incomparable.reason
