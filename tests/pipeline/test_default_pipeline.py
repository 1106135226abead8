"""The whole chain on the embedded default data, from a fresh copy of the repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tabserve.core.bundle import read_lineage, read_schema, verify_bundle
from tests.pipeline.conftest import commit, dvc_lock_md5, mlflow_client, run, set_params, stages_run

pytestmark = pytest.mark.slow

ALL_STAGES = ["ingest", "prepare", "tune", "train", "register", "promote", "import"]


@pytest.fixture(scope="module")
def repo(make_repo) -> Path:
    repo = make_repo("default")
    proc = run(repo, "dvc", "repro")
    assert stages_run(proc.stdout) == ALL_STAGES
    return repo


def test_outputs_and_test_metrics(repo: Path) -> None:
    metrics = json.loads((repo / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "roc_auc", "log_loss", "f1"}
    assert metrics["roc_auc"] > 0.95 and metrics["accuracy"] > 0.9
    for plot in ("roc", "pr", "confusion"):
        assert json.loads((repo / "plots" / f"{plot}.json").read_text())
    assert (repo / "models" / "bundle" / "model.ubj").read_bytes()[:1] == b"{"  # UBJSON, no pickle
    assert sorted(p.name for p in (repo / "models" / "bundle").iterdir()) == [
        "model.ubj",
        "reference.json",
        "schema.json",
    ]
    show = run(repo, "dvc", "metrics", "show", "--json")
    assert "roc_auc" in show.stdout


def test_mlflow_trials_runs_and_registry(repo: Path) -> None:
    client = mlflow_client(repo)
    experiment = client.get_experiment_by_name("tabserve")
    runs = client.search_runs([experiment.experiment_id], max_results=500)
    parents = [
        r
        for r in runs
        if r.data.tags.get("stage") == "tune" and r.info.run_name.startswith("tune-")
    ]
    assert len(parents) == 1
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 6
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trials) == list(range(6))
    complete = [r for r in trials if r.data.tags["optuna.state"] == "COMPLETE"]
    assert complete and all(
        "valid_logloss" in r.data.metrics and "max_depth" in r.data.params for r in complete
    )
    assert any(t.startswith("best.") for t in parent.data.tags)
    assert parent.data.tags["tune.timed_out"] == "false"
    assert parent.data.metrics["n_finished"] == 6
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/optimization_history.html" in parent_artifacts

    train = next(r for r in runs if r.data.tags.get("stage") == "train")
    assert {"test_accuracy", "test_roc_auc", "test_log_loss", "test_f1"} <= set(train.data.metrics)
    plots = {a.path for a in client.list_artifacts(train.info.run_id, "plots")}
    assert plots == {"plots/roc.png", "plots/pr.png", "plots/confusion_matrix.png"}

    version = client.get_model_version_by_alias("tabserve", "champion")
    assert str(version.version) == "1"
    assert str(client.get_model_version_by_alias("tabserve", "challenger").version) == "1"
    tags = version.tags
    assert tags["mlflow_run_id"] == train.info.run_id
    assert tags["promotion.decision"] == "promoted"
    assert json.loads(tags["metrics"]) == json.loads((repo / "metrics.json").read_text())
    model_info = client.get_logged_model(version.model_id) if version.model_id else None
    if model_info is not None:
        assert model_info.source_run_id == train.info.run_id
    model_dir = Path(client.download_artifacts(train.info.run_id, "schema.json", str(repo / "dl")))
    assert model_dir.exists()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    from mlflow.models import get_model_info

    info = get_model_info("models:/tabserve@champion")
    assert info.signature is not None and info.signature.inputs.input_names()[0] == "mean radius"
    assert info.saved_input_example_info is not None


def test_bentoml_model_carries_lineage(repo: Path) -> None:
    store = repo / ".bentoml" / "models" / "tabserve"
    assert (store / "latest").read_text().strip() == "v1"
    lineage = verify_bundle(store / "v1")
    assert lineage == read_lineage(store / "v1")
    client = mlflow_client(repo)
    champion = client.get_model_version_by_alias("tabserve", "champion")
    assert lineage.registry_version == "1"
    assert lineage.mlflow_run_id == champion.tags["mlflow_run_id"]
    head = run(repo, "git", "rev-parse", "HEAD").stdout.strip()
    assert lineage.git_commit == head
    locked = dvc_lock_md5(repo, "prepare")
    assert lineage.data_md5 == {
        s: locked[f"data/prepared/{s}.parquet"] for s in ("train", "valid", "test")
    }
    assert lineage.metrics == json.loads((repo / "metrics.json").read_text())
    assert (
        lineage.params["max_depth"]
        == json.loads((repo / "tuning/best_params.json").read_text())["params"]["max_depth"]
    )
    assert read_schema(store / "v1").feature_names[0] == "mean radius"
    listed = run(repo, "bentoml", "models", "get", "tabserve:latest", "-o", "json")
    assert json.loads(listed.stdout)["metadata"]["model_sha256"] == lineage.model_sha256


def test_second_repro_runs_nothing_and_dvc_push_works(repo: Path) -> None:
    proc = run(repo, "dvc", "repro")
    assert stages_run(proc.stdout) == []
    assert "Data and pipelines are up to date" in proc.stdout
    push = run(repo, "dvc", "push")
    assert "pushed" in push.stdout
    assert any((repo / ".dvc-remote").rglob("*"))


def test_same_seed_from_scratch_gives_identical_metrics(repo: Path, make_repo) -> None:
    other = make_repo("default-again")
    run(other, "dvc", "repro", "train")
    assert (other / "metrics.json").read_text() == (repo / "metrics.json").read_text()
    assert (other / "tuning/best_params.json").read_text() == (
        repo / "tuning/best_params.json"
    ).read_text()


def test_tune_param_change_reruns_tune_and_later_stages_only(repo: Path) -> None:
    set_params(repo, {"tune.n_trials": 7})
    commit(repo, "more trials")
    proc = run(repo, "dvc", "repro")
    ran = stages_run(proc.stdout)
    assert ran[0] == "tune" and "ingest" not in ran and "prepare" not in ran
    assert ran == ["tune", "train", "register", "promote", "import"][: len(ran)]
    client = mlflow_client(repo)
    if "register" in ran:
        # A second version was registered and fought the champion on the same test set.
        decision = json.loads((repo / "registry/promotion.json").read_text())
        assert decision["challenger_version"] == "2" and decision["champion_version"] == "1"
        assert decision["champion_score"] is not None and decision["challenger_score"] is not None
        champion = str(client.get_model_version_by_alias("tabserve", "champion").version)
        assert champion == decision["champion_after"]


def test_rollback_moves_champion_and_reimports(repo: Path) -> None:
    client = mlflow_client(repo)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='tabserve'"))
    if versions == [1]:
        # Make sure there is something to roll back from.
        set_params(repo, {"tune.n_trials": 8, "promote.metric": "accuracy"})
        run(repo, "dvc", "repro")
        versions = sorted(int(v.version) for v in client.search_model_versions("name='tabserve'"))
    client.set_registered_model_alias("tabserve", "champion", str(versions[-1]))
    bad = run(repo, "python", "-m", "training.promote", "rollback", "--to", "99", check=False)
    assert bad.returncode == 2 and "no version 99" in bad.stderr
    run(repo, "python", "-m", "training.promote", "rollback", "--to", "1")
    assert str(client.get_model_version_by_alias("tabserve", "champion").version) == "1"
    store = repo / ".bentoml" / "models" / "tabserve"
    assert (store / "latest").read_text().strip() == "v1"
    assert verify_bundle(store / "v1").registry_version == "1"


def _live_rows(classes: list[str], rows: int) -> list[dict]:
    """Labelled rows both models answered, as `tabserve live-report --snapshot` writes them:
    the champion right on 7 rows in 10, the challenger on 9 in 10 (its extra wins are the
    rows the champion gets wrong)."""
    made = []
    for i in range(rows):
        truth = classes[i % 2]
        wrong = classes[1 - i % 2]
        champion, shadow = (truth, truth) if i % 10 < 7 else (wrong, truth if i % 10 < 9 else wrong)

        def answer(label: str) -> dict:
            return {
                "label": label,
                "probabilities": {c: 0.8 if c == label else 0.2 for c in classes},
            }

        made.append(
            {
                "id": f"{i:016x}-0",
                "champion": answer(champion),
                "shadow": answer(shadow),
                "actual": truth,
            }
        )
    return made


def test_live_evidence_decides_promotion_reproducibly(repo: Path) -> None:
    """`promote.evidence: live`: the snapshot is a dependency of the stage; too few rows
    keep the champion, enough rows with a significant difference promote the challenger,
    and the same snapshot re-runs nothing."""
    from tabserve.core.live_evidence import Snapshot

    client = mlflow_client(repo)
    champion = str(client.get_model_version_by_alias("tabserve", "champion").version)
    challenger = str(client.get_model_version_by_alias("tabserve", "challenger").version)
    if challenger == champion:  # a challenger that is not yet champion
        set_params(repo, {"tune.n_trials": 9})
        run(repo, "dvc", "repro")
        champion = str(client.get_model_version_by_alias("tabserve", "champion").version)
        challenger = str(client.get_model_version_by_alias("tabserve", "challenger").version)
        client.set_registered_model_alias("tabserve", "champion", "1")
        champion = "1"
    assert challenger != champion
    classes = [str(c) for c in read_schema(repo / "models" / "bundle").target.classes]
    Snapshot(f"v{champion}", f"v{challenger}", _live_rows(classes, 240)).write(
        repo / "evidence" / "live.json"
    )
    set_params(repo, {"promote.evidence": "live", "promote.min_live_rows": 1000})
    commit(repo, "live evidence, too little of it")
    ran = stages_run(run(repo, "dvc", "repro", "promote").stdout)
    assert ran == ["promote"]
    kept = json.loads((repo / "registry/promotion.json").read_text())
    assert kept["evidence"] == "live" and kept["promoted"] is False
    assert "240 labelled live rows, fewer than promote.min_live_rows=1000" in kept["reason"]
    assert str(client.get_model_version_by_alias("tabserve", "champion").version) == champion
    assert stages_run(run(repo, "dvc", "repro", "promote").stdout) == []  # same evidence

    set_params(repo, {"promote.min_live_rows": 200})
    commit(repo, "enough live evidence")
    ran = stages_run(run(repo, "dvc", "repro").stdout)
    assert ran == ["promote", "import"]
    decision = json.loads((repo / "registry/promotion.json").read_text())
    assert decision["promoted"] is True and decision["metric"] == "live_accuracy"
    assert "significant at alpha=0.05" in decision["reason"], decision
    assert decision["challenger_score"] == 0.9 and decision["champion_score"] == 0.7
    assert str(client.get_model_version_by_alias("tabserve", "champion").version) == challenger
    tags = client.get_model_version("tabserve", challenger).tags
    assert tags["promotion.decision"] == "promoted"
    store = repo / ".bentoml" / "models" / "tabserve"
    assert (store / "latest").read_text().strip() == f"v{challenger}"
