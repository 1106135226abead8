"""Check the DVC cache: every object must hash to its own name (``make data-verify``).

DVC names each cache object by the md5 of its content but, for speed, does not re-hash
the local cache on ``dvc checkout``: a corrupted object would be copied into the
workspace as if it were the data. This command re-hashes every object under
``.dvc/cache/files/md5`` (``<2 hex>/<30 hex>``, and ``.dir`` listings), lists those
whose content does not match their name, and with ``--remove`` deletes them, so that
``dvc pull`` (which verifies downloads: ``verify = true`` on the default remote)
fetches good copies.

Exit status: 0 when the cache is sound, 1 when an object is corrupt.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("training.verify_cache")

CACHE = Path(".dvc/cache/files/md5")


@dataclass(frozen=True)
class Corrupt:
    """A cache object whose content does not hash to its name."""

    path: Path
    expected: str
    actual: str


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cache(cache: Path = CACHE) -> tuple[int, list[Corrupt]]:
    """Re-hash every object of a DVC 3 md5 cache; return (objects checked, corrupt ones)."""
    checked, corrupt = 0, []
    if not cache.is_dir():
        return 0, []
    for prefix in sorted(p for p in cache.iterdir() if p.is_dir() and len(p.name) == 2):
        for obj in sorted(prefix.iterdir()):
            if not obj.is_file() or obj.name.endswith((".tmp", ".lock")):
                continue
            expected = prefix.name + obj.name.removesuffix(".dir")
            checked += 1
            actual = _md5(obj)
            if actual != expected:
                corrupt.append(Corrupt(obj, expected, actual))
    return checked, corrupt


def main(argv: list[str] | None = None) -> int:
    """CLI: verify the cache of the repo in the current directory."""
    from training.environment import configure_logging

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=CACHE, help="md5 object folder (default: %(default)s)"
    )
    parser.add_argument(
        "--remove", action="store_true", help="delete corrupt objects (then run `dvc pull`)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    checked, corrupt = verify_cache(args.cache)
    for item in corrupt:
        log.error("corrupt DVC cache object %s: content hashes to %s", item.path, item.actual)
        if args.remove:
            item.path.chmod(0o600)
            item.path.unlink()
    if corrupt:
        hint = (
            "removed; run `dvc pull` to restore them"
            if args.remove
            else ("run with --remove, then `dvc pull` (or re-run the stages that produce them)")
        )
        log.error("%d of %d cache objects are corrupt (%s)", len(corrupt), checked, hint)
        return 1
    log.info("DVC cache sound: %d objects verified", checked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
