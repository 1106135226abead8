"""Stage `register`: a new version in the MLflow model registry, aliased ``@challenger``.

The version carries the lineage as tags (run id, git commit, data md5, model
sha256, params, test metrics); the logged model carries the signature and an
input example. Output: ``registry/registered.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from training.params import load_params

log = logging.getLogger("training.register")

REGISTERED_PATH = Path("registry/registered.json")
CHALLENGER = "challenger"
CHAMPION = "champion"


def lineage_tags(run: dict[str, Any]) -> dict[str, str]:
    """Model-version tags from the train stage's record (all values are strings in MLflow)."""
    tags = {
        "mlflow_run_id": run["run_id"],
        "git_commit": run["git_commit"],
        "model_sha256": run["model_sha256"],
        "files_sha256": json.dumps(run.get("files_sha256", {}), sort_keys=True),
        "data_md5": json.dumps(run["data_md5"], sort_keys=True),
        "params": json.dumps(run["params"], sort_keys=True),
        "metrics": json.dumps(run["metrics"], sort_keys=True),
    }
    tags |= {f"metric.{k}": str(v) for k, v in run["metrics"].items()}
    return tags


def register(client: Any, model_name: str, run: dict[str, Any]) -> str:
    """Register the train run's model, tag it, alias it ``@challenger``; return its version."""
    import mlflow

    version = mlflow.register_model(run["model_uri"], model_name, tags=lineage_tags(run)).version
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    client.update_model_version(
        model_name,
        version,
        description=(
            f"Trained in run {run['run_id']} at commit {run['git_commit']}; "
            f"test metrics {run['metrics']}"
        ),
    )
    return str(version)


def main(argv: list[str] | None = None) -> int:
    """CLI: register ``models/train_run.json``'s model, write ``registry/registered.json``."""
    import mlflow

    from training.environment import configure_logging, configure_mlflow

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--run", type=Path, default=Path("models/train_run.json"), help="train stage record"
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params)
    run = json.loads(args.run.read_text())
    configure_mlflow(params.registry.experiment)
    version = register(mlflow.MlflowClient(), params.registry.model_name, run)
    REGISTERED_PATH.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model_name": params.registry.model_name,
        "version": version,
        "run_id": run["run_id"],
        "model_sha256": run["model_sha256"],
        "metrics": run["metrics"],
    }
    REGISTERED_PATH.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("registered %s version %s as @%s", params.registry.model_name, version, CHALLENGER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
