"""Dates and timestamps: how one is read, and the parts of it a tree model can use.

A date or timestamp feature is given as it is (an ISO 8601 string such as ``2026-12-07``
or ``2026-12-07T09:30:00Z``, or a date or datetime object in a frame), and the model
sees its parts: the year, month, day of the month, day of the week (Monday 0), day of
the year, the days elapsed since a reference the schema records (the earliest value in
training; fractional for a timestamp), and for a timestamp the hour. A time zone is
honoured and then dropped: every timestamp is read as UTC.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd

DATE_PARTS = ("year", "month", "day", "weekday", "dayofyear", "days")
TIMESTAMP_PARTS = (*DATE_PARTS, "hour")
_DAY = 86_400.0


def parts_of(kind: str) -> tuple[str, ...]:
    """The parts a feature of ``kind`` (``date`` or ``timestamp``) becomes."""
    return TIMESTAMP_PARTS if kind == "timestamp" else DATE_PARTS


def parse_when(value: Any, fmt: str | None = None) -> dt.datetime | None:
    """``value`` as a naive UTC datetime, or None when it is missing.

    Text is ISO 8601 or, where the feature has one (``data.formats``), in its
    ``strftime`` format ``fmt``.

    Raises:
        ValueError: for text that is not an ISO 8601 date or timestamp, or a value of
            another type (a number is not a date).
    """
    if (
        value is None
        or value is pd.NaT
        or value is pd.NA
        or (isinstance(value, float) and math.isnan(value))
    ):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            if fmt is None:
                raise
            parsed = dt.datetime.strptime(text, fmt)
    elif isinstance(value, pd.Timestamp):
        parsed = value.to_pydatetime()
    elif isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, np.datetime64):
        parsed = pd.Timestamp(value).to_pydatetime()
    else:
        raise ValueError(f"{type(value).__name__} is not a date")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def iso(value: Any, fmt: str | None = None) -> str | None:
    """``value`` as ISO 8601 text (a date without its midnight time), or None."""
    parsed = parse_when(value, fmt)
    if parsed is None:
        return None
    if parsed.time() == dt.time(0):
        return parsed.date().isoformat()
    return parsed.isoformat()


def encode_when(
    value: Any, kind: str, reference: dt.datetime, fmt: str | None = None
) -> list[float]:
    """The parts of one value (NaN each when it is missing or unreadable)."""
    try:
        parsed = parse_when(value, fmt)
    except ValueError:
        parsed = None
    if parsed is None:
        return [math.nan] * len(parts_of(kind))
    cells = [
        float(parsed.year),
        float(parsed.month),
        float(parsed.day),
        float(parsed.weekday()),
        float(parsed.timetuple().tm_yday),
        (parsed - reference).total_seconds() / _DAY,
    ]
    if kind == "timestamp":
        cells.append(float(parsed.hour))
    else:
        cells[-1] = math.floor(cells[-1])
    return cells


def as_datetimes(values: pd.Series, fmt: str | None = None) -> pd.Series:
    """A column of dates or timestamps as naive UTC ``datetime64``; unreadable ones NaT.

    Text is ISO 8601 or, where given, in the ``strftime`` format ``fmt``.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.astype("datetime64[ns]")
    text = values.astype("object")
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if fmt is not None:
        formatted = pd.to_datetime(text, errors="coerce", format=fmt, utc=True)
        parsed = parsed.fillna(formatted)
    return parsed.dt.tz_localize(None)


def frame_parts(
    values: pd.Series, kind: str, reference: dt.datetime, fmt: str | None = None
) -> dict[str, pd.Series]:
    """The parts of a whole column, as float64 columns keyed by part."""
    when = as_datetimes(values, fmt)
    days = (when - pd.Timestamp(reference)).dt.total_seconds() / _DAY
    parts = {
        "year": when.dt.year,
        "month": when.dt.month,
        "day": when.dt.day,
        "weekday": when.dt.day_of_week,
        "dayofyear": when.dt.day_of_year,
        "days": days if kind == "timestamp" else np.floor(days),
    }
    if kind == "timestamp":
        parts["hour"] = when.dt.hour
    return {
        part: pd.Series(parts[part], index=values.index).astype("float64")
        for part in parts_of(kind)
    }
