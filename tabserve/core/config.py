"""How every settings section is declared and read: one prefix, one error format.

tabserve's settings are split in sections, each beside the feature it configures
(``tabserve/security/settings.py``, ``tabserve/http/settings.py``,
``tabserve/serving/settings.py``); every section reads ``TABSERVE_*`` variables from the
environment with pydantic-settings and fails loudly through :func:`load_section`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TABSERVE_"
SectionT = TypeVar("SectionT", bound=BaseSettings)


def section_config() -> SettingsConfigDict:
    """The configuration every section shares: the prefix, other variables ignored."""
    return SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")


class SettingsError(RuntimeError):
    """The configuration cannot be used; the message says what to set."""


def split_list(value: Any) -> Any:
    """A comma- or space-separated environment value as a list (lists pass through)."""
    if isinstance(value, str):
        return [item for item in value.replace(",", " ").split() if item]
    return value


def problems(exc: ValidationError) -> str:
    """One line naming each variable at fault (``TABSERVE_MAX_ROWS: ...``)."""
    return "; ".join(
        f"{ENV_PREFIX}{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )


def load_section(section: type[SectionT], what: str = "settings") -> SectionT:
    """Read ``section`` from the environment.

    Raises:
        SettingsError: ``invalid <what>: TABSERVE_X: why; TABSERVE_Y: why``.
    """
    try:
        return section()
    except ValidationError as exc:
        raise SettingsError(f"invalid {what}: {problems(exc)}") from None
