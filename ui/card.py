"""The model card as Markdown (version, metrics, lineage, params)."""

from __future__ import annotations

from typing import Any

from tabserve.core.when import parts_of


def _table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def _code(value: Any) -> str:
    return f"`{str(value).replace('`', '')}`"


def _feature_rows(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """A row per date or timestamp (the parts the model reads of it) and per categorical
    whose rare values were folded (its ``other`` level)."""
    rows = []
    for feature in schema["features"]:
        name = feature["name"]
        if feature["kind"] in ("date", "timestamp"):
            parts = ", ".join(_code(f".{p}") for p in parts_of(feature["kind"]))
            rows.append(
                (f"&nbsp;&nbsp;{_code(name)}", f"{feature['kind']}: the model reads {parts}")
            )
        elif feature.get("other"):
            kept = len(feature["categories"]) - 1
            rows.append(
                (
                    f"&nbsp;&nbsp;{_code(name)}",
                    f"{kept} categories kept, the rest (and new ones) as {_code(feature['other'])}",
                )
            )
    return rows


def card_markdown(card: dict[str, Any]) -> str:
    """Markdown of ``Predictor.card().as_dict()`` (what ``GET /model`` answers)."""
    lineage = card["lineage"]
    schema = card["schema"]
    target = schema["target"]
    if card["task"] == "regression":
        what = (
            f"{_code(target['name'])}, observed [{target['min']:.4g}, {target['max']:.4g}], "
            f"answers with a {card['interval_coverage']:.0%} prediction interval"
        )
    else:
        what = f"{_code(target['name'])} in " + ", ".join(_code(c) for c in target["classes"])
    metrics = _table(
        [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in card["metrics"].items()],
        ("test metric", "value"),
    )
    data = ", ".join(f"{split} {_code(md5[:12])}" for split, md5 in lineage["data_md5"].items())
    origin = _table(
        [
            ("model", f"{_code(card['tag'])} (version {_code(card['version'])})"),
            ("task", f"{card['task']}: {what}"),
            ("registry version", _code(lineage["registry_version"])),
            ("MLflow run", _code(lineage["mlflow_run_id"])),
            ("git commit", _code(lineage["git_commit"])),
            ("data (md5)", data),
            ("model sha256", _code(lineage["model_sha256"][:16] + "…")),
            ("created", _code(lineage["created_at"])),
            ("features", str(len(schema["features"]))),
            *_feature_rows(schema),
        ],
        ("lineage", ""),
    )
    params = ", ".join(f"{k}={_code(v)}" for k, v in sorted(card["params"].items()))
    return f"### Model card\n\n{origin}\n\n{metrics}\n\n**Training params:** {params}\n"


def _figures(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in figures.items()) or "–"


def shadow_markdown(monitor: Any) -> str:
    """The shadow challenger's section of the card: which model, how often it agrees with
    the champion, and both models' quality on the same labelled rows (from the record)."""
    shadow = monitor.shadow
    if shadow is None:
        return ""
    status = shadow.status()
    figures = monitor.live.shadow_status.get(status["version"]) if monitor.live else None
    rows = [
        ("model", f"{_code(shadow.predictor.tag)} (version {_code(status['version'])})"),
        ("this worker", f"{status['compared']:,} rows compared, {status['shed']:,} shed"),
    ]
    if figures is None:
        rows.append(("agreement", "no row in the record yet"))
    else:
        rows += [
            (
                "agreement",
                f"{figures['agreement']:.1%} of its last {figures['compared']:,} rows",
            ),
            ("labelled rows (both models)", f"{figures['labelled']:,}"),
            ("champion on them", _figures(figures["champion"])),
            ("shadow on them", _figures(figures["shadow"])),
        ]
    return "### Shadow challenger\n\n" + _table(rows, ("runs beside the champion", ""))
