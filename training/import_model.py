"""Stage `import`: the ``@champion`` model goes into the BentoML model store with its lineage,
and the ``@challenger`` beside it (what ``TABSERVE_SHADOW_MODEL`` can run as a shadow).

The BentoML model ``<model_name>:v<registry version>`` holds a bundle (see
``tabserve/core/bundle.py``): the native booster, the schema, sample test rows and
``lineage.json`` (MLflow run and registry version, DVC data md5, git commit,
params, test metrics, model sha256). Re-importing makes it the store's latest. The
challenger goes in as ``<model_name>-challenger:v<registry version>``, never the served
``<model_name>:latest``. Output: ``registry/bento_model.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tabserve.core.bundle import (
    EXAMPLES_FILE,
    MODEL_FILE,
    BundleIntegrityError,
    Lineage,
    read_schema,
    sha256_file,
    write_bundle,
)
from training.params import load_params
from training.register import CHALLENGER, CHAMPION

log = logging.getLogger("training.import")

BENTO_MODEL_PATH = Path("registry/bento_model.json")


def champion_lineage(mv: Any, model_name: str, alias: str = CHAMPION) -> Lineage:
    """Lineage of a registered model version, from the tags the register stage wrote."""
    tags = mv.tags
    created = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC).isoformat()
    return Lineage(
        model_name=model_name,
        registry_version=str(mv.version),
        mlflow_run_id=tags.get("mlflow_run_id") or mv.run_id,
        data_md5=json.loads(tags["data_md5"]),
        git_commit=tags["git_commit"],
        params=json.loads(tags["params"]),
        metrics=json.loads(tags["metrics"]),
        model_sha256=tags["model_sha256"],
        files_sha256=json.loads(tags.get("files_sha256", "{}")),
        created_at=created,
        registry_alias=alias,
        mlflow_model_uri=f"models:/{model_name}/{mv.version}",
    )


def import_champion(
    model_name: str, alias: str = CHAMPION, bento_name: str | None = None
) -> dict[str, str]:
    """Copy ``models:/<model_name>@<alias>`` into the BentoML store as
    ``<bento_name>:v<version>`` (``bento_name`` defaults to ``model_name``); return its tag
    and hash.

    Raises:
        BundleIntegrityError: the downloaded model does not match its recorded sha256.
    """
    import bentoml
    import mlflow

    client = mlflow.MlflowClient()
    mv = client.get_model_version_by_alias(model_name, alias)
    lineage = champion_lineage(mv, model_name, alias)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{model_name}/{mv.version}", dst_path=f"{tmp}/model"
            )
        )
        files = next(model_dir.rglob(MODEL_FILE)).parent  # the logged models/bundle
        if sha256_file(files / MODEL_FILE) != lineage.model_sha256:
            raise BundleIntegrityError(
                f"registered version {mv.version}: model file hash differs from its lineage"
            )
        examples_file = mlflow.artifacts.download_artifacts(
            run_id=lineage.mlflow_run_id, artifact_path=EXAMPLES_FILE, dst_path=f"{tmp}/run"
        )
        schema = read_schema(files)
        examples = json.loads(Path(examples_file).read_text())
        tag = bentoml.Tag(bento_name or model_name, f"v{mv.version}")
        try:
            bentoml.models.delete(
                tag
            )  # re-importing (e.g. after a rollback) makes it `latest` again
            log.info("replacing %s in the BentoML store", tag)
        except bentoml.exceptions.NotFound:
            pass
        metadata = {k: v for k, v in lineage.model_dump().items() if k not in ("params",)}
        with bentoml.models.create(
            tag,
            labels={
                "registry_version": str(mv.version),
                "alias": alias,
                "stage": "production" if alias == CHAMPION else "staging",
            },
            metadata=metadata,
            module="tabserve.core.bundle",
        ) as bento_model:
            write_bundle(
                bento_model.path,
                model_file=files / MODEL_FILE,
                schema=schema,
                lineage=lineage,
                examples=examples,
                extra_files={name: files / name for name in lineage.files_sha256},
            )
    return {
        "tag": str(tag),
        "registry_version": str(mv.version),
        "model_sha256": lineage.model_sha256,
    }


def import_challenger(model_name: str) -> dict[str, str] | None:
    """``@challenger`` as ``<model_name>-challenger:v<N>`` (a shadow for the champion:
    ``make serve SHADOW=<model_name>-challenger:latest``); None when no version has it."""
    import mlflow

    try:
        mlflow.MlflowClient().get_model_version_by_alias(model_name, CHALLENGER)
    except mlflow.exceptions.MlflowException:
        return None
    return import_champion(model_name, CHALLENGER, f"{model_name}-challenger")


def main(argv: list[str] | None = None) -> int:
    """CLI: import ``@champion`` into the BentoML store, write ``registry/bento_model.json``."""
    from training.environment import configure_logging, configure_mlflow, use_bentoml_home

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params)
    home = use_bentoml_home()
    configure_mlflow(params.registry.experiment)
    name = params.registry.model_name
    try:
        record = import_champion(name)
        challenger = import_challenger(name)
    except BundleIntegrityError as exc:
        log.error("import refused: %s", exc)
        return 1
    if challenger is not None:
        record["challenger_tag"] = challenger["tag"]
    BENTO_MODEL_PATH.parent.mkdir(parents=True, exist_ok=True)
    BENTO_MODEL_PATH.write_text(
        json.dumps(record | {"bentoml_home": str(home)}, indent=2, sort_keys=True) + "\n"
    )
    log.info(
        "imported @%s (registry version %s) into the BentoML store at %s as %s",
        CHAMPION,
        record["registry_version"],
        home,
        record["tag"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
