"""Stage `promote`: challenger vs ``@champion`` on the frozen test set, or on live evidence.

``promote.evidence: test`` (the default): ``@champion`` moves to the challenger only when
it is at least as good on ``promote.metric`` (the first model always becomes champion).
``promote.evidence: live``: only when the challenger, run as the champion's shadow, is
better on the live rows of ``evidence/live.json`` (``tabserve live-report --snapshot``):
at least ``promote.min_live_rows`` labelled rows and a paired test's p-value under
``promote.alpha`` (``tabserve/core/live_evidence.py``). The snapshot is a dependency of
the stage, so ``dvc repro`` re-runs it when the evidence changes, and the same snapshot
gives the same decision. The decision is written to ``registry/promotion.json`` and to
MLflow (a ``promote`` run and tags on the challenger's version).

``python -m training.promote rollback --to VERSION`` points ``@champion`` back at
an earlier registered version (recorded in MLflow too) and imports it into the
BentoML store, so the next ``make serve`` serves it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabserve.core.schema import FeatureSchema
from training.params import METRICS_HIGHER_IS_BETTER, load_params
from training.register import CHALLENGER, CHAMPION

log = logging.getLogger("training.promote")

PROMOTION_PATH = Path("registry/promotion.json")
LIVE_EVIDENCE_PATH = Path("evidence/live.json")


@dataclass(frozen=True)
class Decision:
    """Whether the challenger becomes champion, and why."""

    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    challenger_score: float | None
    champion_version: str | None
    champion_score: float | None
    evidence: str = "test"

    @property
    def champion_after(self) -> str | None:
        """The version that holds ``@champion`` after the decision."""
        return self.challenger_version if self.promoted else self.champion_version


def decide(
    metric: str,
    challenger_version: str,
    challenger_score: float | None,
    champion_version: str | None,
    champion_score: float | None,
    comparable: bool = True,
) -> Decision:
    """Pure decision rule: promote when there is no champion, the champion cannot be
    scored on this data, or the challenger is at least as good on ``metric``."""
    higher = METRICS_HIGHER_IS_BETTER[metric]
    args: dict[str, Any] = {
        "metric": metric,
        "challenger_version": challenger_version,
        "challenger_score": challenger_score,
        "champion_version": champion_version,
        "champion_score": champion_score,
    }
    if champion_version is None:
        return Decision(True, "no champion yet: the first model becomes champion", **args)
    if champion_version == challenger_version:
        return Decision(True, "the challenger already is the champion", **args)
    if not comparable or champion_score is None or challenger_score is None:
        return Decision(
            True,
            "the champion was trained on another schema and cannot be scored "
            "on this test set: the challenger replaces it",
            **args,
        )
    better = challenger_score >= champion_score if higher else challenger_score <= champion_score
    relation = "at least as good as" if better else "worse than"
    reason = (
        f"challenger {metric}={challenger_score:.6f} is {relation} champion "
        f"{metric}={champion_score:.6f} on the same test set"
    )
    return Decision(better, reason, **args)


def score_version(
    name: str, version: str, schema: FeatureSchema, test: pd.DataFrame, metric: str
) -> float | None:
    """``metric`` of a registered version on ``test`` (through the service's predictor);
    None if its schema is not ``schema``."""
    import mlflow

    from tabserve.core.bundle import MODEL_FILE
    from tabserve.core.predictor import Predictor
    from training.modeling import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=tmp)
        )
        files = next(model_dir.rglob(MODEL_FILE)).parent
        predictor = Predictor.from_files(files, version=version)
    own = predictor.schema
    if own.features != schema.features or own.target.model_dump(
        include={"name", "kind", "classes"}
    ) != schema.target.model_dump(include={"name", "kind", "classes"}):
        return None
    return evaluate(predictor, test).metrics.get(metric)


def live_decision(promote: Any, challenger: str, champion: str) -> Decision:
    """The decision ``promote.evidence: live`` makes from ``evidence/live.json``."""
    from tabserve.core.live_evidence import Snapshot, compare, decide_live

    snapshot = Snapshot.read(LIVE_EVIDENCE_PATH)
    comparison = compare(snapshot)
    verdict = decide_live(
        comparison, snapshot, challenger, champion, promote.min_live_rows, promote.alpha
    )
    figure = next((f for f in comparison.figures if f.metric == comparison.primary), None)
    return Decision(
        verdict.promote,
        verdict.reason,
        f"live_{comparison.primary}",
        challenger,
        None if figure is None else figure.shadow,
        champion,
        None if figure is None else figure.champion,
        evidence="live",
    )


def record_decision(decision: Decision, model_name: str, experiment: str) -> None:
    """Write the decision to ``registry/promotion.json``, MLflow and the registry aliases."""
    import mlflow

    client = mlflow.MlflowClient()
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, decision.challenger_version)
    outcome = "promoted" if decision.promoted else "rejected"
    client.set_model_version_tag(
        model_name, decision.challenger_version, "promotion.decision", outcome
    )
    client.set_model_version_tag(
        model_name, decision.challenger_version, "promotion.reason", decision.reason
    )
    with mlflow.start_run(run_name=f"promote-v{decision.challenger_version}"):
        mlflow.set_tags(
            {
                "stage": "promote",
                "decision": outcome,
                "reason": decision.reason,
                "challenger_version": decision.challenger_version,
                "champion_before": str(decision.champion_version),
                "champion_after": str(decision.champion_after),
                "evidence": decision.evidence,
            }
        )
        scores = {"challenger": decision.challenger_score, "champion": decision.champion_score}
        mlflow.log_metrics(
            {f"{who}_{decision.metric}": s for who, s in scores.items() if s is not None}
        )
    PROMOTION_PATH.parent.mkdir(parents=True, exist_ok=True)
    record = asdict(decision) | {
        "champion_after": decision.champion_after,
        "model_name": model_name,
    }
    PROMOTION_PATH.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def current_champion(client: Any, model_name: str) -> str | None:
    """The version behind ``@champion``, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except MlflowException:
        return None


def run_promotion(args: argparse.Namespace) -> int:
    """Compare ``@challenger`` with ``@champion`` and move ``@champion`` if it earned it."""
    import mlflow

    from training.environment import configure_mlflow

    params = load_params(args.params)
    schema = FeatureSchema.load(args.prepared / "schema.json")
    name = params.registry.model_name
    try:
        metric = params.promote.metric_for(schema.target.kind)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    configure_mlflow(params.registry.experiment)
    client = mlflow.MlflowClient()
    challenger = str(client.get_model_version_by_alias(name, CHALLENGER).version)
    champion = current_champion(client, name)
    if params.promote.evidence == "live" and champion is not None and champion != challenger:
        decision = live_decision(params.promote, challenger, champion)
    else:
        decision = decision_on_test_set(args.prepared, name, schema, metric, challenger, champion)
    record_decision(decision, name, params.registry.experiment)
    log.info(
        "%s (%s evidence): %s → @champion is version %s",
        "PROMOTED" if decision.promoted else "KEPT CHAMPION",
        decision.evidence,
        decision.reason,
        decision.champion_after,
    )
    return 0


def decision_on_test_set(
    prepared: Path,
    name: str,
    schema: FeatureSchema,
    metric: str,
    challenger: str,
    champion: str | None,
) -> Decision:
    """The decision ``promote.evidence: test`` makes: both versions on the test split."""
    test = pd.read_parquet(prepared / "test.parquet")
    challenger_score = score_version(name, challenger, schema, test, metric)
    champion_score = None
    if champion is not None and champion != challenger:
        champion_score = score_version(name, champion, schema, test, metric)
    return decide(
        metric,
        challenger,
        challenger_score,
        champion,
        champion_score,
        comparable=champion is None or champion == challenger or champion_score is not None,
    )


def run_rollback(args: argparse.Namespace) -> int:
    """Point ``@champion`` at ``args.to`` (an existing version), record it, import it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.environment import configure_mlflow

    params = load_params(args.params)
    name = params.registry.model_name
    configure_mlflow(params.registry.experiment)
    client = mlflow.MlflowClient()
    try:
        client.get_model_version(name, args.to)
    except MlflowException:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        log.error("model %s has no version %s; versions: %s", name, args.to, versions)
        return 2
    before = current_champion(client, name)
    client.set_registered_model_alias(name, CHAMPION, args.to)
    client.set_model_version_tag(name, args.to, "rollback.from", str(before))
    with mlflow.start_run(run_name=f"rollback-to-v{args.to}"):
        mlflow.set_tags(
            {
                "stage": "rollback",
                "champion_before": str(before),
                "champion_after": args.to,
                "reason": args.reason,
            }
        )
    log.info("rolled @champion back from version %s to %s", before, args.to)
    if args.no_import:
        return 0
    from training.import_model import main as import_main

    return import_main(["--params", args.params])


def main(argv: list[str] | None = None) -> int:
    """CLI: ``promote`` (the DVC stage) or ``promote rollback --to N``."""
    from training.environment import configure_logging

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--prepared", type=Path, default=Path("data/prepared"), help="prepared data folder"
    )
    sub = parser.add_subparsers(dest="command")
    rollback = sub.add_parser(
        "rollback", help="point @champion at an earlier version and import it"
    )
    rollback.add_argument("--to", required=True, help="registered version to make champion")
    rollback.add_argument("--reason", default="manual rollback", help="recorded in MLflow")
    rollback.add_argument("--no-import", action="store_true", help="only move the alias")
    args = parser.parse_args(argv)
    configure_logging()
    if args.command == "rollback":
        return run_rollback(args)
    return run_promotion(args)


if __name__ == "__main__":
    sys.exit(main())
