"""The record section of the settings: where served rows and their ground truth go, and how
live quality is computed from them."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from tabserve.core.config import load_section, section_config
from tabserve.record.backends import open_store


class RecordSettings(BaseSettings):
    """The served-rows record (``tabserve/record/``).

    Attributes:
        record_url: where served rows and ground truth are kept: ``sqlite:///path.db``
            (one machine: a file every worker shares) or ``postgresql://user:pw@host/db``
            (several replicas); unset: nothing is recorded and ``POST /feedback`` answers
            503. ``make serve`` sets ``sqlite:///<clone>/.tabserve/record.db``.
        record_retention_days: served rows and ground truths older than this are deleted
            (feedback for them is then ``unknown_id``).
        record_queue_rows: the most served rows waiting to be written, per worker; beyond,
            rows are dropped and counted (the store is slow or down).
        record_batch_rows: the most rows written in one transaction.
        record_flush_s: how long a served row may wait for others to join its write (the
            delay before feedback can name it).
        record_timeout_s: connection and statement timeout of the store.
        live_quality_rows: live quality is computed over this many most recently labelled
            rows of each model version.
        live_quality_interval_s: how often each worker recomputes live quality from the
            record (it is read from the shared store, so every worker publishes the same).
    """

    model_config = section_config()

    record_url: str | None = None
    record_retention_days: float = Field(default=30.0, gt=0, le=36_500)
    record_queue_rows: int = Field(default=50_000, ge=100, le=10_000_000)
    record_batch_rows: int = Field(default=2_000, ge=1, le=100_000)
    record_flush_s: float = Field(default=0.2, ge=0.01, le=60)
    record_timeout_s: float = Field(default=5.0, ge=0.5, le=300)
    live_quality_rows: int = Field(default=1_000, ge=10, le=1_000_000)
    live_quality_interval_s: float = Field(default=10.0, ge=0.5, le=3600)

    @field_validator("record_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "off":
            return None
        open_store(value.strip())  # raises ValueError for a scheme it does not know
        return value.strip()


def load_record_settings() -> RecordSettings:
    """Read the record section alone (the CLI's ``export-labelled``, ``live-report``)."""
    return load_section(RecordSettings, "record settings")
