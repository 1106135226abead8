"""Stage `ingest`: bring the source data into the repo (``data/raw/data.parquet``).

``data.source`` is an embedded dataset name (shipped inside scikit-learn, so
nothing is downloaded) or a path to a CSV or Parquet file.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from training.csv_dialect import probable_delimiter, shown, sniff
from training.errors import DataError
from training.params import CsvParams, load_params

log = logging.getLogger("training.ingest")

EMBEDDED = ("breast_cancer", "iris", "wine", "diabetes")  # the last one a regression target
RAW_PATH = Path("data/raw/data.parquet")


def load_embedded(name: str) -> pd.DataFrame:
    """One of scikit-learn's bundled datasets as a frame with a ``target`` column.

    A classification target holds the class names the dataset gives (``target_names``,
    e.g. ``malignant``/``benign``), so that answers read without a codebook; ``diabetes``
    has a numeric target (disease progression a year later): a regression dataset.
    """
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    # diabetes: the measurements in their own units (sex 1/2, age in years...), not the
    # mean-centred, scaled copy, so that the UI form and the API take real values.
    bunch = loader(as_frame=True, scaled=False) if name == "diabetes" else loader(as_frame=True)
    frame = bunch.frame
    if "target_names" in bunch:  # a classification dataset: its classes by name
        names = [str(n) for n in bunch.target_names]
        frame["target"] = pd.Series(
            [names[int(code)] for code in frame["target"]], index=frame.index, dtype="str"
        )
    return frame


def _duplicates(names: list[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def read_table(path: Path, dialect: CsvParams | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file, refusing duplicate column names. A CSV's delimiter and
    decimal mark are ``dialect``'s, or sniffed (``training/csv_dialect.py``).

    Raises:
        DataError: the file is missing, unreadable, empty, has duplicate columns, or is
            a CSV that still reads as one column (naming the delimiter it likely uses).
    """
    if not path.is_file():
        raise DataError(f"data source {path} does not exist (data.source in params.yaml)")
    suffix = path.suffix.lower()
    dialect = dialect or CsvParams()
    try:
        if suffix == ".csv":
            found = sniff(path, dialect.sep, dialect.decimal, dialect.encoding)
            with path.open(newline="", encoding=found.encoding) as handle:
                header = next(csv.reader(handle, delimiter=found.sep), [])
            names = header
            frame = pd.read_csv(path, sep=found.sep, decimal=found.decimal, encoding=found.encoding)
            log.info(
                "CSV %s: delimiter %s, decimal mark %s (%s)",
                path.name,
                shown(found.sep),
                shown(found.decimal),
                "sniffed" if found.sniffed else "data.csv",
            )
            if len(frame.columns) == 1 and (likely := probable_delimiter(str(frame.columns[0]))):
                raise DataError(
                    f"data source {path} reads as a single column {str(frame.columns[0])[:80]!r}: "
                    f"it probably uses {shown(likely)} as its delimiter; set "
                    f"data.csv.sep: {shown(likely).split(' ')[0]} in params.yaml"
                )
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
            if not _duplicates(names):
                frame = pd.read_parquet(path)
        else:
            raise DataError(
                f"data source {path}: unsupported file type {suffix!r} (use .csv or .parquet)"
            )
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"data source {path} could not be read: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise DataError(
            f"data source {path} could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    duplicated = _duplicates([str(n) for n in names])
    if duplicated:
        raise DataError(f"data source {path} has duplicate column names: {', '.join(duplicated)}")
    if frame.empty or len(frame.columns) == 0:
        raise DataError(f"data source {path} has no rows")
    return frame


def check_dvc_record(path: Path) -> None:
    """If ``path`` is tracked by a ``<path>.dvc`` file, its content must match that record.

    DVC does not re-hash its cache on checkout, so a corrupted cache object reaches the
    workspace unnoticed; ``dvc repro`` would then treat it as an intended edit.

    Raises:
        DataError: the file's md5 is not the one its ``.dvc`` file records.
    """
    record = path.with_name(path.name + ".dvc")
    if not record.is_file():
        return
    import yaml

    from training.verify_cache import _md5

    outs = (yaml.safe_load(record.read_text()) or {}).get("outs") or [{}]
    expected = outs[0].get("md5")
    if expected is None:
        return
    actual = _md5(path)
    if actual != expected:
        raise DataError(
            f"data source {path} does not match its DVC record {record.name} (md5 {actual}, "
            f"recorded {expected}): the DVC cache or the file is corrupt. To restore it: "
            "`python -m training.verify_cache --remove`, delete the file, `dvc pull`; "
            "or `dvc add` it if the change is intended"
        )


def ingest(source: str, root: Path, dialect: CsvParams | None = None) -> pd.DataFrame:
    """Load ``source`` (embedded name or file path relative to ``root``) as a frame."""
    if source in EMBEDDED:
        return load_embedded(source)
    path = Path(source)
    path = path if path.is_absolute() else root / path
    if path.is_file():
        check_dvc_record(path)
    return read_table(path, dialect)


def main(argv: list[str] | None = None) -> int:
    """CLI: read params.yaml, ingest, write ``data/raw/data.parquet`` atomically."""
    from training.environment import configure_logging

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, default=RAW_PATH, help="output file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params(args.params)
    try:
        frame = ingest(params.data.source, Path.cwd(), params.data.csv)
    except DataError as exc:
        log.error("ingest failed: %s", exc)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    frame.to_parquet(partial, index=False)
    partial.replace(args.out)
    log.info(
        "ingested %d rows x %d columns from %s → %s",
        len(frame),
        frame.shape[1],
        params.data.source,
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
