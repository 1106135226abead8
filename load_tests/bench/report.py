"""The report: ``report.md`` and the Plotly charts."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from load_tests.bench.common import (
    AFTER_BURST,
    AFTER_BURST_SECONDS,
    OUTPUT,
    SINGLE_ROWS,
    Contender,
    RunResult,
)
from load_tests.bench.contenders import workers_text
from load_tests.bench.flood_bench import flood_lines, flood_targets
from load_tests.bench.stats import Spread, good, metric, ratio_spread, runs_of, targets
from load_tests.profiles import BuiltProfile


# ---- report --------------------------------------------------------------------------
def profile_lines(
    results: list[RunResult], profile: BuiltProfile, cont: list[Contender], heading: str = ""
) -> list[str]:
    """The report's section on one profile: a table per level, then its targets."""
    mine = [r for r in results if r.profile == profile.name]
    rounds = len({r.round for r in mine})
    lines = [f"## Profile {profile.describe()}{heading}", ""]
    if rounds > 1:
        lines += [
            f"Medians over {rounds} rounds, the range in parentheses; each ratio is taken "
            "within a round (contenders side by side), then over the rounds.",
            "",
        ]
    order = {"load": 0, SINGLE_ROWS: 1, AFTER_BURST: 2}
    cells = sorted({(r.users, r.phase) for r in mine}, key=lambda c: (order[c[1]], c[0]))
    for users, phase in cells:
        title = {
            "load": f"{users} concurrent users",
            SINGLE_ROWS: f"{users} concurrent users, single-row requests only",
            AFTER_BURST: "1 user, right after the burst",
        }[phase]
        lines += [
            f"### {title}",
            "",
            "| contender | req/s | p50 ms | p95 ms | p99 ms | failures | server CPU ms/req "
            "| rows per model call | batched ÷ this |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in cont:
            runs = runs_of(results, profile.name, c.name, users, phase)
            if not runs:
                continue
            if not good(runs):
                lines.append(f"| {c.name} | error: {runs[0].error[:80]} | | | | | | | |")
                continue
            rps, p50, p95, p99 = (metric(runs, a) for a in ("rps", "p50", "p95", "p99"))
            cpu = metric([r for r in runs if r.cpu_ms_per_request], "cpu_ms_per_request")
            rows = metric([r for r in runs if r.mean_batch_rows], "mean_batch_rows")
            rel = (
                ratio_spread(results, profile.name, users, c.name, phase=phase)
                if phase != AFTER_BURST
                else None
            )
            cells_text = [
                c.name,
                rps.text() if rps else "",
                p50.text(digits=1 if p50 and p50.median < 10 else 0) if p50 else "",
                p95.text() if p95 else "",
                p99.text() if p99 else "",
                str(sum(r.failures for r in runs)),
                cpu.text(digits=2) if cpu else "",
                rows.text(digits=1) if rows else "",
                rel.text("×", 2) if rel and c.name != "batched" else "",
            ]
            lines.append("| " + " | ".join(cells_text) + " |")
        lines.append("")
    checks = targets(results, profile.name)
    if checks:
        lines += [f"Targets ({profile.name}):", "", "| target | met | measured |", "|---|---|---|"]
        for text, met, measured in checks:
            mark = "yes" if met else ("n/a" if met is None else "**no**")
            lines.append(f"| {text} | {mark} | {measured} |")
        lines.append("")
    return lines


def with_workers(results: list[RunResult], workers: int) -> list[RunResult]:
    """The runs made with ``workers`` worker processes per contender."""
    return [r for r in results if r.workers == workers]


def within_noise(a: Spread, b: Spread) -> bool | None:
    """Whether two spreads of one ratio agree: the median of each lies within the other's
    range (None with a single round: no range to compare with)."""
    if a.n < 2 or b.n < 2:
        return None
    return a.low <= b.median <= a.high or b.low <= a.median <= b.high


def workers_lines(results: list[RunResult], profiles: list[BuiltProfile]) -> list[str]:
    """With several worker counts: each ratio of (1) with more workers beside the same
    ratio with the fewest, measured in the same rounds."""
    counts = sorted({r.workers for r in results})
    if len(counts) < 2:
        return []
    base = counts[0]
    lines = [
        f"## {' and '.join(map(str, counts[1:]))} workers against {base}",
        "",
        "Each ratio taken within a round, with each number of worker processes per contender "
        "(the worker counts ran side by side in every round); within noise: the median of "
        "each lies within the other's range over the rounds. Server CPU: unbatched ÷ batched "
        "server CPU per request (Locust's own CPU left out).",
        "",
        "| profile | users | ratio | "
        + " | ".join(map(workers_text, counts))
        + " | within noise |",
        "|---|---|---|" + "---:|" * len(counts) + "---|",
    ]
    for profile in profiles:
        mine = [r for r in results if r.profile == profile.name]
        cells = sorted({(r.users, r.phase) for r in mine if r.phase != AFTER_BURST})
        others = list(dict.fromkeys(r.contender for r in mine if r.contender != "batched"))
        for users, phase in cells:
            where = f"{users}" + (", single rows" if phase == SINGLE_ROWS else "")
            rows: list[tuple[str, list[Spread | None]]] = [
                (
                    f"batched ÷ {other}",
                    [
                        ratio_spread(with_workers(mine, w), profile.name, users, other, phase=phase)
                        for w in counts
                    ],
                )
                for other in others
            ]
            rows.append(
                (
                    "server CPU",
                    [
                        ratio_spread(
                            with_workers(mine, w),
                            *(profile.name, users, "batched", "unbatched", phase),
                            attr="cpu_ms_per_request",
                        )
                        for w in counts
                    ],
                )
            )
            for name, spreads in rows:
                first = spreads[0]
                if first is None or all(s is None for s in spreads[1:]):
                    continue
                agree = [within_noise(first, s) for s in spreads[1:] if s is not None]
                verdict = (
                    "n/a (one round)"
                    if any(a is None for a in agree)
                    else ("yes" if all(agree) else "**no**")
                )
                lines.append(
                    f"| {profile.name} | {where} | {name} | "
                    + " | ".join(s.text("×", 2) if s else "" for s in spreads)
                    + f" | {verdict} |"
                )
    return [*lines, ""]


def labelled(
    results: list[RunResult], cont: list[Contender]
) -> tuple[list[RunResult], dict[str, str]]:
    """The runs and contender titles for the charts: with several worker counts, each
    contender with more workers than the fewest is a line of its own."""
    counts = sorted({r.workers for r in results})
    titles = {c.name: c.title for c in cont}
    if len(counts) < 2:
        return results, titles
    out = []
    for r in results:
        if r.workers != counts[0]:
            name = f"{r.contender} ×{r.workers}"
            titles[name] = f"{titles[r.contender]}, {r.workers} workers"
            r = replace(r, contender=name)
        out.append(r)
    return out, titles


def write_charts(
    results: list[RunResult], titles: dict[str, str], profiles: list[str]
) -> list[Path]:
    """Plotly charts per profile: throughput and p50/p95/p99 latency against users
    (medians over the rounds)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(dict.fromkeys(r.contender for r in results))
    throughput = make_subplots(rows=1, cols=len(profiles), subplot_titles=profiles)
    latency = make_subplots(
        rows=len(profiles),
        cols=3,
        subplot_titles=[f"{p}: {q}" for p in profiles for q in ("p50", "p95", "p99")],
    )
    for row, profile in enumerate(profiles, start=1):
        for name in names:
            levels = sorted(
                {
                    r.users
                    for r in results
                    if (r.profile, r.contender, r.phase) == (profile, name, "load")
                }
            )
            points = [(u, runs_of(results, profile, name, u)) for u in levels]
            points = [(u, runs) for u, runs in points if good(runs)]
            x = [u for u, _ in points]

            def median(
                attr: str, points: list[tuple[int, list[RunResult]]] = points
            ) -> list[float]:
                return [
                    statistics.median(getattr(r, attr) for r in good(runs)) for _, runs in points
                ]

            throughput.add_trace(
                go.Scatter(
                    x=x,
                    y=median("rps"),
                    mode="lines+markers",
                    name=titles[name],
                    legendgroup=name,
                    showlegend=row == 1,
                ),
                row=1,
                col=row,
            )
            for col, attr in enumerate(("p50", "p95", "p99"), start=1):
                latency.add_trace(
                    go.Scatter(
                        x=x,
                        y=median(attr),
                        mode="lines+markers",
                        name=titles[name],
                        legendgroup=name,
                        showlegend=row == 1 and col == 1,
                    ),
                    row=row,
                    col=col,
                )
    throughput.update_layout(
        title="Throughput (requests/s) against concurrent users, per profile (zero think time)"
    )
    throughput.update_xaxes(title_text="concurrent users")
    latency.update_layout(
        title="Latency (ms) against concurrent users, per profile", height=320 * len(profiles)
    )
    latency.update_xaxes(title_text="concurrent users")
    paths = [OUTPUT.results / "throughput.html", OUTPUT.results / "latency.html"]
    # One shared plotly.min.js next to the charts: they open offline.
    throughput.write_html(paths[0], include_plotlyjs="directory")
    latency.write_html(paths[1], include_plotlyjs="directory")
    return paths


def write_report(
    results: list[RunResult],
    cont: list[Contender],
    profiles: list[BuiltProfile],
    meta: dict[str, Any],
    flood: dict[str, Any] | None = None,
) -> Path:
    """``report.md``: per profile the numbers, the ratios of (1) to each contender and the
    targets; then the login flood."""
    lines = [
        "# tabserve benchmark",
        "",
        f"Run {meta['started']} → {meta['finished']} on {meta['machine']}, "
        f"{meta['rounds']} round(s).",
        f"Pinning: {meta['pinning']}. Load before the run (1-min load average): {meta['load']}.",
        f"Workers per contender: {meta['workers']}. Load: {meta['mix']}, batches of "
        f"{meta['batch']} rows, zero think time, {meta['seconds']} s measured per level after "
        f"{meta['warmup']} s of warm-up (logins excluded); then 1 user for "
        f"{min(meta['seconds'], AFTER_BURST_SECONDS)} s right after the last level, with no "
        f"warm-up. Server settings: {meta['server_env']}. Default model: {meta['model']}.",
        "",
        "Contenders: "
        + "; ".join(f"({i}) `{c.name}`: {c.title}" for i, c in enumerate(cont, 1))
        + ".",
        "`mlflow` has no authentication (and no explanations); `constant` does no work.",
        "",
    ]
    counts = sorted({r.workers for r in results})
    for workers in counts:
        heading = f", {workers_text(workers)} per contender" if len(counts) > 1 else ""
        for profile in profiles:
            lines += profile_lines(with_workers(results, workers), profile, cont, heading)
    lines += workers_lines(results, profiles)
    if flood is not None:
        lines += flood_lines(flood)
        lines += ["| target | met | measured |", "|---|---|---|"]
        for text, met, measured in flood_targets(flood):
            mark = "yes" if met else ("n/a" if met is None else "**no**")
            lines.append(f"| {text} | {mark} | {measured} |")
        lines.append("")
    lines += [
        "Charts: [throughput](throughput.html), [latency](latency.html). Per run: Locust's "
        "HTML report and CSV stats in `runs/` (`<profile>_<contender>_u<users>_r<round>.html`, "
        "`_stats.csv`; `<contender>_w2` with two workers), server logs "
        "`runs/<profile>_<contender>_r<round>.server.log`. Raw numbers: `results.json`.",
        "",
    ]
    path = OUTPUT.results / "report.md"
    path.write_text("\n".join(lines))
    return path
