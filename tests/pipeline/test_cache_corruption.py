"""A corrupted file in the DVC cache is detected, never used as data.

DVC does not re-hash its local cache on ``dvc checkout``, so three guards are tested:
``make data-verify`` (``training.verify_cache``) finds the object whose content no
longer matches its name; the ``ingest`` stage refuses a DVC-tracked source that does
not match its ``.dvc`` record; and ``dvc pull`` from the default remote
(``verify = true``) refuses a corrupted download.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import palmerpenguins
import pytest
import yaml

from tests.pipeline.conftest import commit, run

pytestmark = pytest.mark.slow


def _object(repo: Path, dvc_file: Path) -> Path:
    md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _corrupt(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20  # one flipped bit: the file still parses as CSV
    path.write_bytes(bytes(data))


def test_a_corrupted_cache_object_is_detected_not_used(make_repo) -> None:
    repo = make_repo(
        "cache", {"data.source": "data/sources/penguins.csv", "data.target": "species"}
    )
    source = repo / "data" / "sources" / "penguins.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(palmerpenguins.__file__).parent / "data" / "penguins.csv", source)
    run(repo, "dvc", "add", "data/sources/penguins.csv")
    commit(repo, "track the source with DVC")
    run(repo, "dvc", "push")
    assert run(repo, "python", "-m", "training.verify_cache").returncode == 0

    obj = _object(repo, source.with_name("penguins.csv.dvc"))
    _corrupt(obj)
    source.unlink()
    run(repo, "dvc", "checkout", "data/sources/penguins.csv.dvc")  # DVC copies it unchecked

    # 1. The cache check names the corrupt object.
    check = run(repo, "python", "-m", "training.verify_cache", check=False)
    assert check.returncode == 1
    assert obj.name in check.stderr and "corrupt" in check.stderr

    # 2. The pipeline refuses the corrupted source instead of training on it.
    repro = run(repo, "dvc", "repro", "ingest", check=False)
    assert repro.returncode != 0
    assert "does not match its DVC record" in repro.stdout + repro.stderr
    assert not (repo / "data" / "raw" / "data.parquet").exists()

    # 3. Remove the corrupt object and pull a verified good copy: the pipeline runs again.
    assert run(repo, "python", "-m", "training.verify_cache", "--remove", check=False).returncode
    source.unlink()  # the damaged workspace copy
    run(repo, "dvc", "pull", "data/sources/penguins.csv.dvc")
    assert run(repo, "python", "-m", "training.verify_cache").returncode == 0
    run(repo, "dvc", "repro", "ingest")
    assert (repo / "data" / "raw" / "data.parquet").exists()


def test_a_corrupted_remote_object_is_refused_by_pull(make_repo) -> None:
    repo = make_repo("remote")
    source = repo / "data" / "sources" / "penguins.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(palmerpenguins.__file__).parent / "data" / "penguins.csv", source)
    run(repo, "dvc", "add", "data/sources/penguins.csv")
    run(repo, "dvc", "push")
    dvc_file = source.with_name("penguins.csv.dvc")
    md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
    remote_object = repo / ".dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]
    _corrupt(remote_object)
    # A fresh clone's state: no cache, no workspace copy.
    shutil.rmtree(repo / ".dvc" / "cache")
    source.unlink()
    pull = run(repo, "dvc", "pull", "data/sources/penguins.csv.dvc", check=False)
    assert pull.returncode != 0
    assert not source.exists()  # nothing corrupt was checked out
    assert run(repo, "python", "-m", "training.verify_cache").returncode == 0  # nor cached
