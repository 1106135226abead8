"""The scopes a token may carry, and the one rule that reads them."""

from __future__ import annotations

from collections.abc import Iterable

SCOPES = ("predict", "explain", "feedback", "admin")
ADMIN = "admin"


class UserError(ValueError):
    """A user operation that cannot be done (bad name, unknown scope, no such user)."""


def grants(scopes: Iterable[str], needed: str) -> bool:
    """Whether ``scopes`` grant ``needed``: the scope itself, or ``admin``, which grants all."""
    held = tuple(scopes)
    return needed in held or ADMIN in held


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Normalise scopes given as ``"a,b"``, ``"a b"`` or a list; refuse unknown ones.

    Raises:
        UserError: for a scope outside ``predict``, ``explain``, ``feedback``, ``admin``.
    """
    items = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    unknown = sorted(set(items) - set(SCOPES))
    if unknown:
        raise UserError(f"unknown scope(s) {unknown}; known: {list(SCOPES)}")
    return [s for s in SCOPES if s in items]
