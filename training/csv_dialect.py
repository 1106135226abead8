"""How a CSV file is written: its delimiter and decimal mark (part of stage ``ingest``).

Spreadsheets export CSV in the conventions of their locale: in much of Europe the
delimiter is a semicolon and numbers have a decimal comma (``3,14``). Read with the
defaults, such a file is one column. :func:`sniff` looks at the start of the file:
the delimiter among ``,`` ``;`` tab ``|`` that splits the lines consistently (Python's
``csv.Sniffer``), and a decimal comma only where it is unambiguous (the delimiter is not
a comma, numbers with a comma appear, and none with a point). ``data.csv`` in
``params.yaml`` overrides either.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

DELIMITERS = ",;\t|"
SAMPLE_BYTES = 64 * 1024
_COMMA_NUMBER = re.compile(r"^-?\d+,\d+$")
_POINT_NUMBER = re.compile(r"^-?\d*\.\d+$")


@dataclass(frozen=True)
class Dialect:
    """How to read one CSV file."""

    sep: str
    decimal: str
    encoding: str
    sniffed: bool  # whether anything was sniffed (for the log)


def sniff(path: Path, sep: str | None, decimal: str | None, encoding: str) -> Dialect:
    """The delimiter and decimal mark of ``path`` (``sep``/``decimal`` when given).

    Raises:
        UnicodeDecodeError: the start of the file is not in ``encoding``.
    """
    with path.open("rb") as handle:
        raw = handle.read(SAMPLE_BYTES)
    sample = raw.decode(encoding, errors="strict" if len(raw) < SAMPLE_BYTES else "ignore")
    lines = sample.splitlines()[:-1] if len(raw) == SAMPLE_BYTES else sample.splitlines()
    text = "\n".join(lines)
    found_sep = sep
    if found_sep is None:
        try:
            found_sep = csv.Sniffer().sniff(text, delimiters=DELIMITERS).delimiter
        except csv.Error:
            found_sep = ","
    found_decimal = decimal
    if found_decimal is None:
        found_decimal = "."
        if found_sep != ",":
            cells = [
                c.strip().strip('"')
                for row in csv.reader(lines[1:], delimiter=found_sep)
                for c in row
            ]
            if any(_COMMA_NUMBER.match(c) for c in cells) and not any(
                _POINT_NUMBER.match(c) for c in cells
            ):
                found_decimal = ","
    return Dialect(found_sep, found_decimal, encoding, sep is None or decimal is None)


def probable_delimiter(header: str) -> str | None:
    """The delimiter a one-column header most likely uses, or None."""
    counts = {d: header.count(d) for d in DELIMITERS if d != ","}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def shown(delimiter: str) -> str:
    """A delimiter as a person writes it in params.yaml."""
    return {"\t": '"\\t" (tab)'}.get(delimiter, f'"{delimiter}"')
