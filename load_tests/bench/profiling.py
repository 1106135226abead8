"""``--py-spy``: the server sampled while it is measured, and the summary of where the time went."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from load_tests.bench.common import BIN


@contextlib.contextmanager
def profiled(
    pid: int, out: Path, enabled: bool, start_marker: Path | None = None
) -> Iterator[None]:
    """Sample ``pid`` and its children with py-spy during the measured window.

    Sampling starts when Locust writes ``start_marker`` (statistics reset: every user
    logged in and warmed up), so logins are not in the profile either; without a marker,
    at once. Writes py-spy's collapsed stacks to ``out`` (for flame-graph tools) and a
    per-function summary to ``out`` with suffix ``.top.txt``.
    """
    if not enabled:
        yield
        return
    spies: list[subprocess.Popen[bytes]] = []
    stop = threading.Event()

    def start_when_measured() -> None:
        while not stop.is_set() and start_marker is not None and not start_marker.exists():
            stop.wait(0.1)
        if not stop.is_set():
            spies.append(
                subprocess.Popen(
                    [
                        *(str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses"),
                        *("--rate", "250", "--format", "raw", "--output", str(out)),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    waiter = threading.Thread(target=start_when_measured, daemon=True)
    waiter.start()
    try:
        yield
    finally:
        stop.set()
        waiter.join()
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        if out.exists():
            out.with_suffix(".top.txt").write_text(profile_summary(out))


def profile_summary(collapsed: Path, top: int = 40) -> str:
    """Where the sampled time went: the share of samples per frame, inclusive and self.

    py-spy samples running threads only (no ``--idle``); frames that still wait (a
    select, a lock) are reported apart, so the shares of busy time say what the CPU did.
    """
    idle_leaves = ("select", "poll", "epoll", "wait", "sleep", "acquire", "accept", "_worker")
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    busy = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        leaf = frames[-1].split(" ")[0] if frames else ""
        if any(word in leaf for word in idle_leaves):
            idle += count
            continue
        busy += count
        for frame in dict.fromkeys(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"busy samples {busy}, idle samples {idle}", "", "inclusive (share of busy):"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / max(busy, 1):6.1f}%  {frame}")
    lines += ["", "self (share of busy):"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / max(busy, 1):6.1f}%  {frame}")
    return "\n".join(lines) + "\n"
