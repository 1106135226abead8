"""Helpers for driving the UI in Debian's Chromium with Playwright (shared by UI tests)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from typing import Any

from tests.support import TestModel

PASSWORD = "correct horse battery"
WAIT_MS = 30_000
# Debian's Chromium (the Makefile installs it); Playwright never downloads a browser here.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def complete_row(model: TestModel, label: Any) -> dict[str, Any]:
    """A test row without missing values whose true class is ``label``."""
    for row, target in zip(model.rows, model.targets, strict=True):
        if target == label and all(v is not None for v in row.values()):
            return row
    raise AssertionError(f"no complete row of class {label}")


def wait_for(probe: Any, expected: Any, what: str, timeout_s: float = 30) -> Any:
    """Poll ``probe()`` until it returns ``expected``; fail with the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = probe()
        if seen == expected:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: expected {expected!r}, last saw {seen!r}")
        time.sleep(0.2)


def shown_answer(page: Any) -> Any:
    """The JSON answer the predict tab shows (None before the first one), without its row
    id (checked: ``<request id>-0``; every call has its own, so only the rest compares)."""
    text = page.input_value("#ui-proba-json textarea")
    if not text:
        return None
    answer = json.loads(text)
    assert re.fullmatch(r"[0-9a-f]{16}-0", answer.pop("id", "")), text
    return answer


def without_id(answer: dict[str, Any]) -> dict[str, Any]:
    """An API answer without its row id (to compare with :func:`shown_answer`)."""
    return {k: v for k, v in answer.items() if k != "id"}


def log_in(page: Any, url: str, user: str, password: str = PASSWORD) -> None:
    """Log in through the form, as a person: anonymous ``/ui/`` leads to it."""
    page.goto(f"{url}/ui/")
    assert page.url.endswith("/ui/login"), page.url  # anonymous: sent to the login form
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_selector("#ui-predict", timeout=WAIT_MS)


def fill_form(page: Any, model: TestModel, row: dict[str, Any]) -> None:
    """Set every input of the form from ``row``, the way a person would."""
    for spec in model.schema.features:
        box = page.locator(f'[id="feature-{spec.name}"]')
        value = row[spec.name]
        if spec.kind == "numeric":
            box.locator("input").fill(str(int(value) if spec.integer else value))
        elif spec.is_when:  # the date picker's text box, typed into and submitted
            box.locator("input").first.fill(str(value))
            box.locator("input").first.press("Enter")
        else:
            box.locator("input").click()
            box.locator(f'[role="option"][aria-label="{value}"]').click()


def csv_bytes(rows: list[dict[str, Any]], extra: dict[str, list[Any]]) -> bytes:
    """``rows`` (plus ``extra`` columns) as a CSV file's bytes."""
    out = io.StringIO()
    names = [*rows[0], *extra]
    writer = csv.DictWriter(out, names)
    writer.writeheader()
    for i, row in enumerate(rows):
        writer.writerow({**row, **{k: v[i] for k, v in extra.items()}})
    return out.getvalue().encode()
