"""The benchmark's arithmetic: ratios side by side within a round, medians and spread over
rounds, and the issue's targets per profile (no server: made-up runs)."""

from __future__ import annotations

import platform
from pathlib import Path

from load_tests.bench.common import (
    AFTER_BURST,
    CONTENDERS,
    EXTRA_CONTENDERS,
    SINGLE_ROWS,
    RunResult,
)
from load_tests.bench.contenders import contenders
from load_tests.bench.machine import cpu_text, machine_text, round_order
from load_tests.bench.report import labelled, profile_lines, with_workers, workers_lines
from load_tests.bench.stats import Spread, ratio_spread, targets
from load_tests.profiles import BuiltProfile


def _run(contender: str, users: int, round_: int, rps: float, **fields: object) -> RunResult:
    defaults: dict[str, object] = {"requests": int(rps * 10), "p50": 10, "p95": 20, "p99": 30}
    return RunResult(contender, users, "default", round_, rps=rps, **{**defaults, **fields})


RUNS = [
    # round 1: batched 1,500, unbatched 1,000, fastapi 1,000; round 2 all slower, same ratios
    # but unbatched's: 1.5× then 2.0×
    _run("batched", 32, 1, 1500),
    _run("unbatched", 32, 1, 1000),
    _run("fastapi", 32, 1, 1000),
    _run("batched", 32, 2, 1000, p99=60),
    _run("unbatched", 32, 2, 500),
    _run("fastapi", 32, 2, 700, failures=2),
    _run("batched", 1, 1, 300, p50=4, phase=AFTER_BURST),
    _run("unbatched", 1, 1, 300, p50=1, phase=AFTER_BURST),
    _run("batched", 1, 2, 300, p50=6, phase=AFTER_BURST),
    _run("unbatched", 1, 2, 300, p50=2, phase=AFTER_BURST),
]


def test_ratios_are_taken_within_a_round_then_summarised() -> None:
    spread = ratio_spread(RUNS, "default", 32, "unbatched")
    assert spread == Spread(median=1.75, low=1.5, high=2.0, n=2)
    assert spread.text("×", 2) == "1.75× (1.50–2.00)"
    fastapi = ratio_spread(RUNS, "default", 32, "fastapi")
    assert fastapi is not None and fastapi.low == 1000 / 700 and fastapi.high == 1.5


def test_targets_of_the_default_profile() -> None:
    checks = {text: (met, measured) for text, met, measured in targets(RUNS, "default")}
    assert checks["32 users: zero failed requests (every contender, every round)"][0] is False
    assert checks["32 users: batched ≥ 1.3× fastapi throughput"][0] is True  # median 1.46
    assert checks["32 users: batched ≥ 1.5× unbatched throughput"][0] is True  # median 1.75
    assert checks["32 users: batched p99 ≤ 50 ms"] == (True, "45 ms (30–60)")
    (low_load,) = [v for k, v in checks.items() if k.startswith("1 user right after")]
    assert low_load[0] is True  # median 5 ms against 1.5 ms: within 5 ms
    assert "batched 5.0 ms (4.0–6.0)" in low_load[1]


def test_a_failed_contender_fails_the_zero_failure_target() -> None:
    runs = [*RUNS[:3], RunResult("unbatched", 32, "default", 3, error="exited")]
    (zero,) = [c for c in targets(runs, "default") if "zero failed" in c[0]]
    assert zero[1] is False and "unbatched" in zero[2]


def _profile() -> BuiltProfile:
    return BuiltProfile(
        *("default", "t", "/home", "tabserve:v1", "models:/m", "sqlite://", "rows.json"),
        *(100, 30, 0, 0, 2, 100, 3, 2.5, 0.3, 0.9),
    )


def test_the_report_section_lists_every_level_and_the_targets() -> None:
    profile = _profile()
    from load_tests.bench.common import Contender

    cont = [Contender(n, n, []) for n in ("batched", "unbatched", "fastapi")]
    text = "\n".join(profile_lines(RUNS, profile, cont))
    assert "### 32 concurrent users" in text and "### 1 user, right after the burst" in text
    assert "| unbatched | 750 (500–1,000) |" in text
    assert "1.75× (1.50–2.00)" in text
    assert "| 32 users: batched p99 ≤ 50 ms | yes | 45 ms (30–60) |" in text


def test_single_row_runs_have_their_own_ratio_and_target() -> None:
    heavy = [
        RunResult("batched", 32, "heavy", 1, rps=700, requests=7000),
        RunResult("unbatched", 32, "heavy", 1, rps=350, requests=3500),
        RunResult("batched", 32, "heavy", 1, SINGLE_ROWS, rps=1200, requests=12000),
        RunResult("unbatched", 32, "heavy", 1, SINGLE_ROWS, rps=300, requests=3000),
    ]
    checks = {text: (met, measured) for text, met, measured in targets(heavy, "heavy")}
    assert checks["32 users: batched ≥ 3.0× unbatched throughput"] == (False, "2.00×")
    assert checks["32 users, single-row requests only: batched ≥ 3.0× unbatched throughput"] == (
        True,
        "4.00×",
    )


def test_against_a_revision_adds_the_batched_service_served_from_its_checkout(
    tmp_path: Path,
) -> None:
    from load_tests.bench.contenders import against_name, contenders

    ports = {name: 1000 + i for i, name in enumerate([*CONTENDERS, *EXTRA_CONTENDERS])}
    plain = [c.name for c in contenders(ports, "models:/m/1")]
    ports[against_name("abc123")] = 2000
    both = contenders(ports, "models:/m/1", against=("abc123", tmp_path))
    assert [c.name for c in both] == [*plain, "batched@abc123"]
    rev = both[-1]
    assert rev.command[rev.command.index("--working-dir") + 1] == str(tmp_path)
    assert rev.command[rev.command.index("--port") + 1] == "2000"
    assert rev.env["PYTHONPATH"] == str(tmp_path) and rev.has_metrics


def test_an_unknown_revision_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from load_tests.bench.contenders import checkout

    with pytest.raises(ValueError, match=r"--against no-such-revision-here: .*invalid reference"):
        checkout("no-such-revision-here", tmp_path)


def test_every_pair_of_contenders_swaps_places_from_one_round_to_the_next() -> None:
    names = ["batched", "unbatched", "fastapi", "batched@HEAD~1"]
    assert round_order(names, 1) == names
    assert round_order(names, 2) == names[::-1]
    assert round_order(names, 3) == names
    first, second = (round_order(names, r) for r in (1, 2))
    for a in names:
        for b in names:
            if a != b:
                assert (first.index(a) < first.index(b)) != (second.index(a) < second.index(b))


def test_two_workers_are_set_beside_one_ratio_by_ratio() -> None:
    def both(round_: int, one: tuple[float, float], two: tuple[float, float]) -> list[RunResult]:
        runs = []
        for workers, (batched, unbatched) in ((1, one), (2, two)):
            for name, rps in (("batched", batched), ("unbatched", unbatched)):
                cpu = 1000 / rps  # server CPU per request in proportion to 1 / throughput
                runs.append(_run(name, 32, round_, rps, workers=workers, cpu_ms_per_request=cpu))
        return runs

    # one worker: 1.5× then 2.0×; two workers: 1.6× then 2.2× (agree), and 1.1× (does not)
    agreeing = [*both(1, (1500, 1000), (1600, 1000)), *both(2, (1000, 500), (1100, 500))]
    lines = workers_lines(agreeing, [_profile()])
    row = next(line for line in lines if "batched ÷ unbatched" in line)
    assert "| 1.75× (1.50–2.00) | 1.90× (1.60–2.20) | yes |" in row
    cpu = next(line for line in lines if "| server CPU |" in line)
    assert "| 1.75× (1.50–2.00) | 1.90× (1.60–2.20) | yes |" in cpu
    apart = [*both(1, (1500, 1000), (1100, 1000)), *both(2, (1000, 500), (1100, 1000))]
    row = next(line for line in workers_lines(apart, [_profile()]) if "÷ unbatched" in line)
    assert row.endswith("| 1.10× (1.10–1.10) | **no** |")
    one_round = [r for r in agreeing if r.round == 1]
    row = next(line for line in workers_lines(one_round, [_profile()]) if "÷ unbatched" in line)
    assert row.endswith("| n/a (one round) |")
    assert workers_lines(with_workers(agreeing, 1), [_profile()]) == []


def test_the_charts_draw_each_worker_count_as_a_line_of_its_own() -> None:
    runs = [_run("batched", 32, 1, 1500), _run("batched", 32, 1, 1800, workers=2)]
    cont = [
        c
        for c in contenders(dict.fromkeys((*CONTENDERS, *EXTRA_CONTENDERS), 1), "")
        if c.name == "batched"
    ]
    out, titles = labelled(runs, cont)
    assert [r.contender for r in out] == ["batched", "batched ×2"]
    assert titles["batched ×2"] == "tabserve, adaptive batching, 2 workers"
    assert labelled(runs[:1], cont) == (runs[:1], {"batched": "tabserve, adaptive batching"})


def test_the_report_names_the_library_versions_it_measured() -> None:
    from importlib.metadata import version

    text = machine_text()
    assert f"xgboost-cpu {version('xgboost-cpu')}" in text
    assert f"bentoml {version('bentoml')}" in text
    assert "CPUs, Python 3." in text


def test_the_report_names_the_cpu_and_its_caches(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n"
        "processor\t: 1\nmodel name\t: other\n"
    )
    for index, (level, size, shared) in enumerate(
        [("1", "48K", "0"), ("1", "32K", "0"), ("2", "1024K", "0"), ("3", "32768K", "0-1")]
    ):
        folder = tmp_path / "cache" / f"index{index}"
        folder.mkdir(parents=True)
        (folder / "level").write_text(level + "\n")
        (folder / "size").write_text(size + "\n")
        (folder / "shared_cpu_list").write_text(shared + "\n")
    assert cpu_text(cpuinfo, tmp_path / "cache") == (
        "AMD EPYC (family 26, model 2), L2 1024K (CPUs 0), L3 32768K (CPUs 0-1)"
    )
    assert cpu_text(tmp_path / "absent", tmp_path / "absent") == ""
    # This machine's own line names its CPU, as much as Linux tells about it.
    assert machine_text().startswith(", ".join(filter(None, [platform.machine(), cpu_text()])))


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    import pytest

    from load_tests.payloads import bundle_dir

    with pytest.raises(FileNotFoundError, match=r"no model 'tabserve' in .*`make model`"):
        bundle_dir(tmp_path, "tabserve:latest")
    (tmp_path / "models" / "tabserve").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no model tabserve:v9 in "):
        bundle_dir(tmp_path, "tabserve:v9")
    (tmp_path / "models" / "tabserve" / "v1").mkdir()
    (tmp_path / "models" / "tabserve" / "latest").write_text("v1\n")
    assert bundle_dir(tmp_path, "tabserve") == tmp_path / "models" / "tabserve" / "v1"


def test_the_bench_without_a_trained_model_says_what_to_run(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "load_tests.bench",
            "--quick",
            "--profiles",
            "default",
            "--only",
            "constant",
            "--out",
            str(tmp_path / "out"),
        ],
        env={**os.environ, "BENTOML_HOME": str(tmp_path / "empty")},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 2
    assert "the default profile: no model 'tabserve'" in result.stderr
    assert "--profiles categorical,heavy" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_benchmark_finds_the_repository_and_its_locustfile() -> None:
    from load_tests.bench.common import LOCUSTFILE, PROFILE_CACHE, REPO

    assert (REPO / "service.py").is_file() and (REPO / "dvc.yaml").is_file()
    assert LOCUSTFILE.is_file()
    assert PROFILE_CACHE.parent == REPO / "load_tests" / "results"
