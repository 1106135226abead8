"""The served-rows record on its embedded store (a real SQLite file): the writer's queue,
feedback outcomes, retention, and live quality against scikit-learn's figures.

PostgreSQL and real servers: ``tests/service/test_feedback_loop.py``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from tabserve.core.quality import actual_label, actual_value, answers_quality
from tabserve.record.backends import open_store
from tabserve.record.rows import Served
from tabserve.record.settings import RecordSettings
from tabserve.record.store import RecordStore
from tabserve.record.writer import Recorder
from tabserve.serving.live import LiveRecord


def _served(prefix: str, n: int, model: str = "v1", role: str = "champion") -> Served:
    answers = [
        {"id": f"{prefix}-{i}", "label": "b", "probabilities": {"a": 0.25, "b": 0.75}}
        for i in range(n)
    ]
    rows = [{"x": float(i), "colour": "red"} for i in range(n)]
    return Served(
        role=role,
        model=model,
        endpoint="predict",
        source="api",
        served_at=time.time(),
        names=("x", "colour"),
        rows=rows,
        answers=answers,
    )


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return open_store(f"sqlite:///{tmp_path / 'record.db'}")


def test_rows_are_written_off_the_caller_in_batches(store: RecordStore) -> None:
    written: list[int] = []
    recorder = Recorder(
        store,
        batch_rows=25,
        flush_s=0.05,
        on_written=lambda calls: written.append(sum(len(c) for c in calls)),
    )
    recorder.start()
    for k in range(4):
        assert recorder.offer(_served(f"r{k}", 10))
    assert recorder.flush()
    recorder.stop()
    assert sum(written) == 40 and max(written) <= 25
    served = store.served(["r0-0", "r3-9", "nope"])
    assert set(served) == {"r0-0", "r3-9"}
    assert served["r0-0"]["answer"] == {  # kept as [label, *probabilities], read back whole
        "label": "b",
        "probabilities": {"a": 0.25, "b": 0.75},
    }


def test_a_full_queue_drops_and_counts_rows_and_never_blocks(store: RecordStore) -> None:
    dropped: list[tuple[int, str]] = []
    recorder = Recorder(store, capacity=100, on_dropped=lambda n, why: dropped.append((n, why)))
    # No writer thread: nothing drains the queue.
    offered = [recorder.offer(_served(f"q{k}", 30)) for k in range(5)]
    assert offered == [True, True, True, False, False]
    assert dropped == [(30, "queue_full"), (30, "queue_full")]


def test_rows_are_queued_as_text_and_what_cannot_be_encoded_is_counted(
    store: RecordStore,
) -> None:
    dropped: list[tuple[int, str]] = []
    recorder = Recorder(store, on_dropped=lambda n, why: dropped.append((n, why)))
    assert recorder.offer(_served("t", 3))
    (queued,) = recorder._waiting  # what waits for the writer: text, not the rows
    assert [(r, f, n) for r, f, n, _, _ in queued.requests] == [("t", 0, 3)]
    assert all(isinstance(text, str) for *_, f, a in queued.requests for text in (f, a))

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    bad = _served("u", 2)
    bad.rows[0]["colour"] = Unprintable()  # type: ignore[index]
    assert not recorder.offer(bad)
    assert dropped == [(2, "unencodable")]
    assert recorder._rows == 3  # its place in the queue given back


def test_a_failing_store_loses_rows_counted_and_the_writer_carries_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database's folder should be")
    store = open_store(f"sqlite:///{blocker / 'record.db'}")
    dropped: list[tuple[int, str]] = []
    recorder = Recorder(store, flush_s=0.05, on_dropped=lambda n, why: dropped.append((n, why)))
    recorder.start()
    recorder.offer(_served("f", 7))
    assert recorder.flush()
    blocker.unlink()  # the store comes back
    recorder.offer(_served("g", 3))
    assert recorder.flush()
    recorder.stop()
    assert dropped == [(7, "store_error")]
    assert store.counts() == {"served_champion": 3, "feedback": 0}


def test_retention_deletes_old_rows_and_their_truths(store: RecordStore) -> None:
    old = _served("old", 2)
    store.write_calls([dataclasses.replace(old, served_at=time.time() - 3600)])
    store.write_calls([_served("new", 2)])
    store.add_feedback([("old-0", "a"), ("new-0", "a")], time.time() - 3600)
    assert store.delete_before(time.time() - 60) == 2
    assert store.counts() == {"served_champion": 2, "feedback": 0}


def test_ground_truth_is_matched_to_its_class_or_refused() -> None:
    assert actual_label("1", [0, 1]) == 1 and actual_label(1, [0, 1]) == 1
    assert actual_label(True, [False, True]) is True
    assert actual_label("Adelie", ["Adelie", "Gentoo"]) == "Adelie"
    for bad in ("maybe", None, [1], 2):
        with pytest.raises(ValueError, match="classes"):
            actual_label(bad, [0, 1])
    assert actual_value(3) == 3.0
    for wrong in (True, "3", math.nan, math.inf, None):
        with pytest.raises(ValueError, match="number"):
            actual_value(wrong)


def _live(tmp_path: Path, classes: list[Any] | None) -> LiveRecord:
    settings = RecordSettings(
        record_url=f"sqlite:///{tmp_path / 'live.db'}", record_flush_s=0.05, live_quality_rows=50
    )
    live = LiveRecord(settings, "v1", classes, {"accuracy": 0.9})
    live.recorder.start()
    return live


def test_feedback_outcomes_and_live_quality_equal_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    classes = ["a", "b", "c"]
    proba = rng.dirichlet([1, 1, 1], size=80)
    answers = [
        {
            "id": f"p-{i}",
            "label": classes[int(np.argmax(p))],
            "probabilities": dict(zip(classes, p, strict=True)),
        }
        for i, p in enumerate(proba.tolist())
    ]
    truths = [classes[int(i)] for i in rng.integers(0, 3, size=80)]
    live = _live(tmp_path, classes)
    live.offer([{"x": 1.0}] * 80, answers, "predict", "api")
    outcomes = live.feedback(
        [{"id": a["id"], "actual": t} for a, t in zip(answers, truths, strict=True)]
        + [{"id": "p-0", "actual": "a"}, {"id": "never", "actual": "a"}, {"id": "p-1", "actual": 4}]
    )
    assert [o.outcome for o in outcomes] == ["recorded"] * 80 + [
        "duplicate",
        "unknown_id",
        "invalid",
    ]
    quality = live.quality()
    rows, figures = quality[("v1", "champion")]
    # live_quality_rows=50: the 50 most recently labelled rows (all labelled at once here:
    # ties broken by id, as the store orders them).
    kept = sorted(range(80), key=lambda i: f"p-{i}")[:50]
    truth = [classes.index(truths[i]) for i in kept]
    p = proba[kept]
    assert rows == 50
    assert figures["accuracy"] == pytest.approx(accuracy_score(truth, p.argmax(1)), abs=1e-12)
    assert figures["log_loss"] == pytest.approx(log_loss(truth, p, labels=[0, 1, 2]), rel=1e-9)
    auc = roc_auc_score(truth, p, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert figures["roc_auc"] == pytest.approx(auc, rel=1e-9)
    live.stop()


def test_regression_quality_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    values, truth = rng.normal(size=60), rng.normal(size=60)
    answers = [
        {"value": v, "interval": {"low": v - 1, "high": v + 1, "coverage": 0.9}} for v in values
    ]
    figures = answers_quality(answers, list(truth))
    assert figures["rmse"] == pytest.approx(root_mean_squared_error(truth, values), rel=1e-12)
    assert figures["mae"] == pytest.approx(mean_absolute_error(truth, values), rel=1e-12)
    assert figures["coverage"] == pytest.approx(np.mean(np.abs(values - truth) <= 1))


def test_offering_never_waits_for_the_store(tmp_path: Path) -> None:
    """A model call's offer is a list append: a store held by another writer (a long
    transaction) delays the writer thread, never the caller."""
    store = open_store(f"sqlite:///{tmp_path / 'busy.db'}", timeout_s=5)
    store.write_calls([_served("warm", 1)])
    holder = open_store(f"sqlite:///{tmp_path / 'busy.db'}")
    release = threading.Event()

    def hold() -> None:
        with holder._cursor() as cursor:
            cursor.execute("BEGIN IMMEDIATE")
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    recorder = Recorder(store, flush_s=0.01)
    recorder.start()
    # The store stays locked until every offer has returned: had an offer waited for
    # it, this loop would never end (the lock is released only after it).
    assert all(recorder.offer(_served(f"busy{k}", 20)) for k in range(50))
    assert store.counts()["served_champion"] == 1  # reads go on; writes wait for the lock
    release.set()
    thread.join()
    assert recorder.flush()
    recorder.stop()
    assert store.counts()["served_champion"] == 1 + 50 * 20


def test_export_labelled_and_live_report_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pandas as pd

    from tabserve.cli.main import main
    from tabserve.core.live_evidence import Snapshot

    url = f"sqlite:///{tmp_path / 'record.db'}"
    store = open_store(url)
    champion, shadow = _served("c", 30), _served("c", 30, model="v2", role="shadow")
    store.write_calls([champion, shadow])
    store.add_feedback([(f"c-{i}", "a" if i % 3 else "b") for i in range(20)], time.time())
    monkeypatch.setenv("TABSERVE_RECORD_URL", url)

    assert main(["export-labelled", str(tmp_path / "served.csv"), "--target", "colour_ok"]) == 0
    exported = pd.read_csv(tmp_path / "served.csv")
    assert len(exported) == 20 and list(exported.columns) == ["x", "colour", "colour_ok"]
    assert "20 labelled rows (models v1)" in capsys.readouterr().out

    page, evidence = tmp_path / "live.html", tmp_path / "live.json"
    assert main(["live-report", "--out", str(page), "--snapshot", str(evidence)]) == 0
    assert "Live report: champion v1 vs shadow v2" in page.read_text()
    snapshot = Snapshot.read(evidence)
    assert (snapshot.champion, snapshot.shadow, len(snapshot.rows)) == ("v1", "v2", 20)

    monkeypatch.delenv("TABSERVE_RECORD_URL")
    assert main(["export-labelled", str(tmp_path / "again.csv")]) == 2
    assert "no record: set TABSERVE_RECORD_URL" in capsys.readouterr().err


def test_predictions_are_kept_compact_and_read_back_whole(store: RecordStore) -> None:
    value = {"value": 3.5, "interval": {"low": 1.0, "high": 6.0, "coverage": 0.9}}
    explained = {"value": 3.5, "base_value": 2.0, "contributions": {"x": 1.5}}
    kept = [{**value, "id": "r-0"}, {**explained, "id": "e-0"}]
    rows = [{"x": 1.0}]
    now = time.time()
    call: dict[str, Any] = {"role": "champion", "model": "v9", "source": "api"}
    call |= {"served_at": now, "names": ("x",)}
    store.write_calls(
        [
            Served(**call, endpoint="predict", rows=rows, answers=kept[:1]),
            Served(**call, endpoint="explain", rows=rows, answers=kept[1:]),
        ]
    )
    assert store.served(["r-0", "e-0"]) == {
        "r-0": {"served_at": now, "answer": value},
        "e-0": {"served_at": now, "answer": kept[1]},  # an explanation is kept whole,
    }
