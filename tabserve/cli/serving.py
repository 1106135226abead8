"""``tabserve check``, ``serve`` and ``drift-report``: the served model from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from tabserve.cli.state import with_store
from tabserve.core.config import SettingsError
from tabserve.security.state import MEMORY_URL, open_state
from tabserve.serving.settings import Settings, check_startup


def check_serving(settings: Settings) -> list[str]:
    """Check that the service can start: usable JWT keys and users file, the state store
    answers, the model is present and intact.

    Raises:
        SettingsError: for an unusable key, or a model that is missing, corrupt or
            inconsistent with its schema (the message says which and what to run).
    """
    from tabserve.core.bundle import BundleIntegrityError
    from tabserve.core.predictor import Predictor

    _ = settings.keys
    messages = [f"warning: {w}" for w in check_startup(settings)]
    if settings.state_url != MEMORY_URL:

        async def ping(store: Any) -> None:
            await store.ping()

        asyncio.run(with_store(settings, ping))
        messages.append(f"ok: state store {open_state(settings.state_url).description} answers")
    try:
        import bentoml
        from bentoml.exceptions import NotFound

        stored = bentoml.models.get(settings.model_tag)
    except NotFound:
        raise SettingsError(
            f"no model {settings.model_tag!r} in the BentoML store "
            f"({os.environ.get('BENTOML_HOME', '~/bentoml')}): run the pipeline "
            "(`dvc repro`) to train and import one, or set TABSERVE_MODEL_TAG"
        ) from None
    try:
        predictor = Predictor.from_bundle(stored.path, version=str(stored.tag.version))
    except BundleIntegrityError as exc:
        raise SettingsError(f"model {stored.tag} cannot be served: {exc}") from None
    lineage = predictor.lineage
    assert lineage is not None  # a verified bundle always has one
    return [
        *messages,
        f"ok: serving {stored.tag} (registry version {lineage.registry_version}, "
        f"run {lineage.mlflow_run_id}, {len(predictor.schema.features)} features, "
        + (
            f"regression of {predictor.schema.target.name!r})"
            if predictor.regression
            else f"classes {predictor.classes})"
        ),
    ]


def check(settings: Settings, _: argparse.Namespace) -> int:
    for line in check_serving(settings):
        print(line)
    return 0


def serve_argv(settings: Settings, target: str, host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line for ``target`` with the service's settings.

    One place for how tabserve is served (``make serve``, the image's entrypoint): the
    graceful-shutdown timeout comes from ``TABSERVE_SHUTDOWN_GRACE_S``.
    """
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        str(settings.shutdown_grace_s),
    ]


def serve(settings: Settings, args: argparse.Namespace) -> int:
    argv = serve_argv(settings, args.target, args.host, args.port)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # BentoML's server replaces this process: signals reach it
    return 0  # pragma: no cover (exec does not return)


def drift_report(settings: Settings, args: argparse.Namespace) -> int:
    from tabserve.core.bundle import read_reference
    from tabserve.core.predictor import Predictor
    from tabserve.reports.drift_report import drift_page, load_rows

    if args.bundle is not None:
        directory, version = args.bundle, args.bundle.name
    else:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            stored = bentoml.models.get(settings.model_tag)
        except NotFound:
            raise SettingsError(
                f"no model {settings.model_tag!r} in the BentoML store: set "
                "TABSERVE_MODEL_TAG, or give the bundle's folder with --bundle"
            ) from None
        directory, version = Path(stored.path), str(stored.tag.version)
    from tabserve.core.bundle import BundleIntegrityError

    try:
        predictor = Predictor.from_bundle(directory, version=version)
    except BundleIntegrityError as exc:
        raise SettingsError(f"the model cannot be read: {exc}") from None
    reference = read_reference(directory)
    if reference is None:
        raise SettingsError(f"the bundle {directory} has no drift reference (retrain it)")
    try:
        rows, answers, source = load_rows(args.log, predictor)
    except (OSError, ValueError, KeyError) as exc:
        raise SettingsError(f"cannot read {args.log}: {exc}") from None
    page, report = drift_page(reference, predictor, rows, answers, source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    worst = max(report.feature_psi.items(), key=lambda kv: kv[1])
    print(
        f"wrote {args.out}: {report.rows} rows; largest feature PSI {worst[1]:.3f} "
        f"({worst[0]}); predictions PSI {report.prediction_psi or 0.0:.3f}"
    )
    return 0
