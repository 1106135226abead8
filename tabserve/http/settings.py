"""The HTTP section of the settings: what one request may carry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

from tabserve.core.config import section_config
from tabserve.security.settings import SecuritySettings


class HttpSettings(BaseSettings):
    """Request limits.

    Attributes:
        max_rows: most rows accepted in one request.
        max_body_bytes: largest request body accepted.
        unknown_category: what a categorical value never seen in training becomes:
            ``missing`` (the default: the row is answered with that feature missing, or as
            its ``other`` level where rare values were folded in training, and the value
            is counted), or ``refuse`` (the row is a 422). A feature with an ``other``
            level takes any value under either policy: training put its rare values
            there, and a new one is read the same way. Production traffic meets new
            categories (a new product, a new region code) all the time; the model has
            learnt where a missing value goes at every split, so a new value costs one
            feature's information, not the whole answer.
    """

    model_config = section_config()

    max_rows: int = Field(default=1000, ge=1, le=1_000_000)
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    unknown_category: Literal["missing", "refuse"] = "missing"


class EdgeSettings(HttpSettings, SecuritySettings):
    """Everything the HTTP edge reads: the request limits and the security section."""
