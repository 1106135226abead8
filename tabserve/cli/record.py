"""``tabserve live-report`` and ``tabserve export-labelled``: the served-rows record from
the command line (``TABSERVE_RECORD_URL``; neither needs the service's secrets)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tabserve.core.config import SettingsError

LIVE_EVIDENCE = Path("evidence/live.json")


def add_parsers(commands: Any) -> None:
    """The two commands' parsers, on the ``tabserve`` command's subparsers."""
    report = commands.add_parser(
        "live-report",
        help="an HTML page of the champion and its shadow on the same labelled live rows "
        "(with --snapshot: the rows too, for `promote.evidence: live`)",
    )
    report.add_argument(
        "--out", type=Path, default=Path("build/live-report.html"), help="default: %(default)s"
    )
    report.add_argument(
        "--snapshot",
        type=Path,
        nargs="?",
        const=LIVE_EVIDENCE,
        default=None,
        help=f"also write the rows compared to this file (default when given: {LIVE_EVIDENCE}, "
        "the promote stage's dependency)",
    )
    report.add_argument("--shadow", help="the shadow's model version (default: the latest)")
    report.add_argument(
        "--rows", type=int, default=5000, help="most recently labelled rows (default: %(default)s)"
    )
    report.add_argument(
        "--alpha", type=float, default=0.05, help="significance level (default: %(default)s)"
    )
    report.set_defaults(handler=live_report, needs_settings=False)

    export = commands.add_parser(
        "export-labelled",
        help="the labelled served rows (features and ground truth) as a dataset the "
        "pipeline can train on (data.source)",
    )
    export.add_argument("out", type=Path, help="a .parquet or .csv file")
    export.add_argument("--model", help="one model version's rows only (default: all)")
    export.add_argument(
        "--target",
        help="the ground truth's column name (default: the served model's target, "
        "TABSERVE_MODEL_TAG in the BentoML store; else `target`)",
    )
    export.set_defaults(handler=export_labelled, needs_settings=False)


def _store() -> Any:
    from tabserve.record.backends import open_store
    from tabserve.record.settings import load_record_settings

    settings = load_record_settings()
    if settings.record_url is None:
        raise SettingsError(
            "no record: set TABSERVE_RECORD_URL (make serve's is "
            "sqlite:///<clone>/.tabserve/record.db)"
        )
    return open_store(settings.record_url, settings.record_timeout_s)


def live_report(_: Any, args: argparse.Namespace) -> int:
    from tabserve.core.live_evidence import compare
    from tabserve.record.store import StoreError
    from tabserve.reports.live_report import live_page, snapshot_from

    try:
        snapshot = snapshot_from(_store(), args.rows, args.shadow)
    except StoreError as exc:
        raise SettingsError(str(exc)) from None
    comparison = compare(snapshot)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(live_page(snapshot, comparison, args.alpha), encoding="utf-8")
    print(
        f"wrote {args.out}: {comparison.rows} labelled rows, champion {snapshot.champion} "
        f"vs shadow {snapshot.shadow}; {comparison.primary} p={comparison.p_value:.4g}"
    )
    if args.snapshot is not None:
        snapshot.write(args.snapshot)
        print(f"wrote {args.snapshot}: the rows compared (commit it; `dvc repro` re-runs promote)")
    return 0


def _target_name() -> str:
    try:
        import bentoml

        from tabserve.core.bundle import read_schema
        from tabserve.serving.settings import model_tag_from_env

        return read_schema(Path(bentoml.models.get(model_tag_from_env()).path)).target.name
    except Exception:  # no store, no model: the plain name
        return "target"


def export_labelled(_: Any, args: argparse.Namespace) -> int:
    import pandas as pd

    from tabserve.record.store import StoreError

    if args.out.suffix.lower() not in (".parquet", ".csv"):
        raise SettingsError(f"{args.out}: write a .parquet or a .csv file")
    try:
        labelled = _store().labelled(model=args.model, role="champion")
    except StoreError as exc:
        raise SettingsError(str(exc)) from None
    target = args.target or _target_name()
    frame = pd.DataFrame([{**row.features, target: row.actual} for row in labelled])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".csv":
        frame.to_csv(args.out, index=False)
    else:
        frame.to_parquet(args.out, index=False)
    models = sorted({row.model for row in labelled})
    print(
        f"wrote {args.out}: {len(frame)} labelled rows (models {', '.join(models) or 'none'}), "
        f"target column {target!r}"
    )
    return 0
