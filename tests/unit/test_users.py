"""The argon2id users file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tabserve.security.users import UserError, UserStore, parse_scopes


@pytest.fixture
def fast_hasher() -> PasswordHasher:
    """An argon2id hasher with tiny costs: the tests check behaviour, not strength."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def test_add_authenticate_remove(tmp_path: Path, fast_hasher: PasswordHasher) -> None:
    store = UserStore(tmp_path / "users.json", fast_hasher)
    store.add("alice", "s3cret-password", "predict,explain")

    record = store.authenticate("alice", "s3cret-password")
    assert record is not None
    assert record.scopes == ["predict", "explain"]
    assert record.password_hash.startswith("$argon2id$")
    assert store.authenticate("alice", "wrong-password") is None
    assert store.authenticate("nobody", "s3cret-password") is None

    text = store.path.read_text()
    assert "s3cret-password" not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o640

    store.remove("alice")
    assert store.get("alice") is None
    with pytest.raises(UserError, match="no user"):
        store.remove("alice")


def test_adding_again_replaces_password_and_scopes(
    tmp_path: Path, fast_hasher: PasswordHasher
) -> None:
    store = UserStore(tmp_path / "users.json", fast_hasher)
    store.add("bob", "first-password", "predict")
    store.add("bob", "second-password", "admin")
    assert store.authenticate("bob", "first-password") is None
    record = store.authenticate("bob", "second-password")
    assert record is not None and record.scopes == ["admin"]


@pytest.mark.parametrize(
    ("name", "password", "scopes", "message"),
    [
        ("bad name", "long-enough", "predict", "invalid user name"),
        ("ok", "short", "predict", "at least 8"),
        ("ok", "long-enough", "predict,root", "unknown scope"),
    ],
)
def test_invalid_users_are_refused(
    tmp_path: Path,
    fast_hasher: PasswordHasher,
    name: str,
    password: str,
    scopes: str,
    message: str,
) -> None:
    with pytest.raises(UserError, match=message):
        UserStore(tmp_path / "users.json", fast_hasher).add(name, password, scopes)


def test_scopes_accept_commas_spaces_and_lists_in_canonical_order() -> None:
    assert parse_scopes("explain, predict") == ["predict", "explain"]
    assert parse_scopes(["admin"]) == ["admin"]
    assert parse_scopes("") == []


def test_a_hash_with_other_parameters_verifies_and_is_rehashed(
    tmp_path: Path, fast_hasher: PasswordHasher
) -> None:
    old = UserStore(tmp_path / "users.json", fast_hasher)
    old.add("alice", "s3cret-password", "predict")
    assert "m=8," in old.get("alice").password_hash  # type: ignore[union-attr]
    current = UserStore(tmp_path / "users.json", PasswordHasher(1, 16, 1))
    assert current.authenticate("alice", "wrong-password") is None
    assert "m=8," in current.get("alice").password_hash  # type: ignore[union-attr]
    assert current.authenticate("alice", "s3cret-password") is not None
    rehashed = current.get("alice").password_hash  # type: ignore[union-attr]
    assert "m=16," in rehashed
    assert current.authenticate("alice", "s3cret-password") is not None
    assert current.get("alice").password_hash == rehashed  # type: ignore[union-attr]


def test_a_read_only_users_file_keeps_the_old_hash_working(
    tmp_path: Path,
    fast_hasher: PasswordHasher,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    UserStore(tmp_path / "users.json", fast_hasher).add("alice", "s3cret-password", "predict")
    current = UserStore(tmp_path / "users.json", PasswordHasher(1, 16, 1))

    def read_only(_: object) -> None:  # what a Kubernetes Secret mount answers (root too)
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(current, "save", read_only)
    assert current.authenticate("alice", "s3cret-password") is not None
    assert "m=8," in current.get("alice").password_hash  # type: ignore[union-attr]
    assert "could not re-hash the password of 'alice'" in caplog.text
    assert "Read-only file system" in caplog.text
