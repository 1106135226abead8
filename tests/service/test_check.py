"""``tabserve check``: the pre-flight that ``make serve`` runs before ``bentoml serve``."""

from __future__ import annotations

from typing import Any

import pytest

from tabserve.cli.main import main


def test_check_passes_for_an_intact_model(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_MODEL_TAG", "tabserve:v1")
    assert main(["check"]) == 0
    assert "ok: serving tabserve:v1" in capsys.readouterr().out


def test_check_names_a_missing_model(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_MODEL_TAG", "tabserve:v99")
    assert main(["check"]) == 2
    assert "no model 'tabserve:v99'" in capsys.readouterr().err


def test_check_refuses_a_short_secret(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TABSERVE_JWT_SECRET", "short")
    assert main(["check"]) == 2
    assert "at least 32 bytes" in capsys.readouterr().err
