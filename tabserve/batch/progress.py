"""Progress of a scoring run: a bar with rows/s and an ETA on a terminal (tqdm), a plain
line every few seconds otherwise (a CI log, ``nohup``), and the summary at the end."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rows done out of ``total`` (an estimate for a CSV, exact for Parquet)."""

    def __init__(
        self,
        total: int | None,
        *,
        estimated: bool = False,
        stream: TextIO | None = None,
        every_s: float = 10.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.estimated = estimated
        self.every_s = every_s
        self.done = 0
        self.started = time.monotonic()
        self._last = self.started
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit=" rows",
                unit_scale=True,
                file=self.stream,
                desc="scoring" + (" (rows estimated)" if estimated else ""),
                dynamic_ncols=True,
            )

    def update(self, rows: int) -> None:
        """Count ``rows`` more rows done."""
        self.done += rows
        if self.total is not None and self.done > self.total:
            self.total = self.done  # a CSV's estimate was low
            if self._bar is not None:
                self._bar.total = self.total
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """One plain progress line: rows, share, rows/s, ETA."""
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"scored {self.done:,} rows"
        if self.total:
            share = min(self.done / self.total, 1.0)
            about = "~" if self.estimated else ""
            text += f" ({about}{share:.0%} of {about}{self.total:,})"
            if rate > 0:
                text += f", {rate:,.0f} rows/s, ETA {_duration((self.total - self.done) / rate)}"
        elif rate > 0:
            text += f", {rate:,.0f} rows/s"
        return text

    def close(self) -> None:
        """Stop drawing."""
        if self._bar is not None:
            self._bar.close()


@dataclass
class Summary:
    """What a run did, for the person who started it."""

    output: str
    model_version: str
    engine: str
    rows: int = 0
    scored: int = 0
    rejected_rows: int = 0
    rejects: str | None = None
    seconds: float = 0.0
    unknown: dict[str, int] = field(default_factory=dict)

    def text(self) -> str:
        """The summary, a few lines."""
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"Scored {self.scored:,} of {self.rows:,} rows with {self.model_version} "
            f"({self.engine}) in {_duration(self.seconds)}: {rate:,.0f} rows/s.",
            f"Output: {self.output}",
        ]
        if self.rejected_rows:
            lines.append(
                f"Rejected {self.rejected_rows:,} rows (the row, the column, the reason): "
                f"{self.rejects}"
            )
        if self.unknown:
            listed = ", ".join(
                f"{name} ({count:,})" for name, count in sorted(self.unknown.items())
            )
            lines.append(
                "Categories never seen in training, read as missing (or as the feature's "
                f"other level): {listed}"
            )
        return "\n".join(lines)


def rejects_path(output: str | Path) -> str:
    """Where the rejects of ``output`` go: beside it, ``reject`` in the name
    (``scores.parquet`` → ``scores.rejects.parquet``)."""
    text = str(output).rstrip("/")
    name = Path(text).name
    stem, dot, suffix = name.rpartition(".")
    rejected = f"{stem}.rejects.{suffix}" if dot and stem else f"{name}.rejects"
    return text[: len(text) - len(name)] + rejected
