"""The HTTP section of the settings: what one request may carry."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from tabserve.core.config import section_config
from tabserve.security.settings import SecuritySettings


class HttpSettings(BaseSettings):
    """Request limits.

    Attributes:
        max_rows: most rows accepted in one request.
        max_body_bytes: largest request body accepted.
    """

    model_config = section_config()

    max_rows: int = Field(default=1000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)


class EdgeSettings(HttpSettings, SecuritySettings):
    """Everything the HTTP edge reads: the request limits and the security section."""
