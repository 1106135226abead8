"""What a soak run must show, computed from what it recorded (pure: no server, no Locust).

The run is cut in quarters: the first is warm-up. Held to the issue's criteria:

- resident memory after warm-up grows by less than 5 % (the last samples' median against
  the end of warm-up), with no steady upward trend (a line fitted to the samples after
  warm-up rises by less than 5 % over that time);
- open file descriptors and threads stay flat after warm-up (a small allowance for
  connections and pooled threads coming and going);
- no 5xx, no lost connection, and every answer the expected one (a bad request its
  4xx, any other a 2xx);
- the p99 latency of the last quarter is at most 1.5 times that of the first.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RSS_GROWTH_LIMIT = 0.05
P99_RATIO_LIMIT = 1.5
FDS_ALLOWANCE = 10
THREADS_ALLOWANCE = 4


@dataclass(frozen=True)
class Sample:
    """The server worker's resources at one moment."""

    t: float  # seconds since the soak started
    rss: int  # bytes
    fds: int
    threads: int


@dataclass(frozen=True)
class Request:
    """One request the soak made."""

    t: float  # seconds since the soak started
    name: str
    ms: float
    status: int  # 0: no answer (a lost connection)


@dataclass
class Verdict:
    """The figures and whether each criterion held."""

    seconds: float
    requests: int
    rps: float
    rss_start_mib: float
    rss_end_mib: float
    rss_growth: float
    rss_trend: float
    fds: tuple[int, int]
    threads: tuple[int, int]
    server_errors: int
    lost_connections: int
    unexpected: int
    p99_first_ms: float
    p99_last_ms: float
    by_name: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "held": self.held}


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of ``points`` (0 for fewer than two)."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def expected(request: Request) -> bool:
    """Whether a request got the answer it should: a bad one its 4xx, any other a 2xx."""
    if request.name.startswith("bad:"):
        return 400 <= request.status < 500
    return 200 <= request.status < 300


def judge(samples: list[Sample], requests: list[Request], seconds: float) -> Verdict:
    """Hold ``samples`` and ``requests`` of a soak of ``seconds`` to the criteria."""
    warm = seconds / 4
    after = [s for s in samples if s.t >= warm] or samples
    edge = max(1, len(after) // 10)
    start_rss = statistics.median(s.rss for s in after[:edge])
    end_rss = statistics.median(s.rss for s in after[-edge:])
    growth = (end_rss - start_rss) / start_rss
    trend = slope([(s.t, s.rss) for s in after]) * (seconds - warm) / start_rss
    fds = (after[0].fds, max(s.fds for s in after))
    threads = (after[0].threads, max(s.threads for s in after))
    first = [r.ms for r in requests if r.t < warm and r.status]
    last = [r.ms for r in requests if r.t >= seconds - warm and r.status]
    verdict = Verdict(
        seconds=seconds,
        requests=len(requests),
        rps=len(requests) / seconds if seconds else 0.0,
        rss_start_mib=start_rss / 2**20,
        rss_end_mib=end_rss / 2**20,
        rss_growth=growth,
        rss_trend=trend,
        fds=fds,
        threads=threads,
        server_errors=sum(r.status >= 500 for r in requests),
        lost_connections=sum(r.status == 0 for r in requests),
        unexpected=sum(not expected(r) for r in requests),
        p99_first_ms=p99(first),
        p99_last_ms=p99(last),
        by_name={
            name: sum(r.name == name for r in requests)
            for name in sorted({r.name for r in requests})
        },
    )
    checks = [
        (growth < RSS_GROWTH_LIMIT, f"RSS grew {growth:.1%} after warm-up (limit 5 %)"),
        (trend < RSS_GROWTH_LIMIT, f"RSS trends up {trend:.1%} over the run (limit 5 %)"),
        (fds[1] <= fds[0] + FDS_ALLOWANCE, f"open files went from {fds[0]} to {fds[1]}"),
        (threads[1] <= threads[0] + THREADS_ALLOWANCE, f"threads: {threads[0]} to {threads[1]}"),
        (verdict.server_errors == 0, f"{verdict.server_errors} answers were 5xx"),
        (verdict.lost_connections == 0, f"{verdict.lost_connections} requests got no answer"),
        (verdict.unexpected == 0, f"{verdict.unexpected} answers were not the expected ones"),
        (
            verdict.p99_last_ms <= P99_RATIO_LIMIT * verdict.p99_first_ms,
            f"p99 {verdict.p99_last_ms:.1f} ms in the last quarter, "
            f"{verdict.p99_first_ms:.1f} ms in the first (limit 1.5x)",
        ),
        (len(requests) > 0, "no request was made"),
    ]
    verdict.failures = [message for ok, message in checks if not ok]
    return verdict


def read_requests(path: Path, started: float) -> list[Request]:
    """The request log the locustfile wrote (epoch seconds turned into run seconds)."""
    with path.open(newline="") as handle:
        return [
            Request(float(t) - started, name, float(ms), int(status))
            for t, name, ms, status in csv.reader(handle)
        ]


def markdown(verdict: Verdict, machine: str, date: str, minutes: float) -> str:
    """The soak's result as a Markdown section, with its date and machine."""
    mark = "held" if verdict.held else "NOT held: " + "; ".join(verdict.failures)
    mix = ", ".join(f"{name} {count:,}" for name, count in verdict.by_name.items())
    return "\n".join(
        [
            f"### Soak of {minutes:g} minutes, {date}",
            "",
            f"Machine: {machine}. {verdict.requests:,} requests ({verdict.rps:.0f}/s): {mix}.",
            "",
            "| criterion | measured | limit |",
            "|---|---|---|",
            f"| RSS after warm-up | {verdict.rss_start_mib:.0f} → {verdict.rss_end_mib:.0f} MiB "
            f"({verdict.rss_growth:+.1%}; trend {verdict.rss_trend:+.1%}) | < 5 % |",
            f"| open files | {verdict.fds[0]} → at most {verdict.fds[1]} | flat |",
            f"| threads | {verdict.threads[0]} → at most {verdict.threads[1]} | flat |",
            f"| 5xx, lost connections, unexpected answers | {verdict.server_errors}, "
            f"{verdict.lost_connections}, {verdict.unexpected} | 0 |",
            f"| p99, first and last quarter | {verdict.p99_first_ms:.1f} ms, "
            f"{verdict.p99_last_ms:.1f} ms | last ≤ 1.5 × first |",
            "",
            f"Result: {mark}.",
            "",
        ]
    )
