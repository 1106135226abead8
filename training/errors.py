"""Errors that stop a stage with a message naming what is wrong and where."""

from __future__ import annotations


class DataError(Exception):
    """The data cannot be used: the message names the column(s) or row(s) at fault."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        detail = "".join(f"\n  - {p}" for p in self.problems)
        super().__init__(message + detail)
