"""The argon2id users file."""

from __future__ import annotations

import math
import stat
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tabserve.security.access import UserValidity
from tabserve.security.tokens import Claims
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


def _claims(sub: str, iat: int) -> Claims:
    return Claims(sub=sub, scopes=("predict",), jti="j", exp=iat + 60, iat=iat)


def test_a_changed_or_removed_user_ends_the_tokens_issued_before(
    tmp_path: Path, fast_hasher: PasswordHasher
) -> None:
    store = UserStore(tmp_path / "users.json", fast_hasher)
    store.add("alice", "s3cret-password", "predict")
    store.add("bob", "s3cret-password", "predict")
    assert store.get("alice").valid_after is None  # a new user: nothing to end
    clock = [0.0]
    validity = UserValidity(store.path, recheck_s=1.0, clock=lambda: clock[0])
    before = int(time.time()) - 5
    assert validity.refusal(_claims("alice", before)) is None
    assert validity.refusal(_claims("ci-robot", before)) is None  # not a user: not ours to end

    store.add("alice", "another-password", "predict")  # a password reset
    store.remove("bob")
    assert validity.refusal(_claims("alice", before)) is None  # read again a second later
    clock[0] += 1.0
    assert "changed" in str(validity.refusal(_claims("alice", before)))
    assert "removed" in str(validity.refusal(_claims("bob", before)))
    after = math.ceil(time.time()) + 1
    assert validity.refusal(_claims("alice", after)) is None
    assert validity.refusal(_claims("bob", after)) is None  # a new bob, later, is not refused

    store.add("bob", "s3cret-password", "predict")  # re-added: the old bob's tokens stay out
    clock[0] += 1.0
    assert "changed" in str(validity.refusal(_claims("bob", before)))
    assert store.load().removed == {}


def test_a_broken_users_file_keeps_what_was_known(
    tmp_path: Path, fast_hasher: PasswordHasher
) -> None:
    store = UserStore(tmp_path / "users.json", fast_hasher)
    store.add("alice", "s3cret-password", "predict")
    store.remove("alice")
    clock = [0.0]
    validity = UserValidity(store.path, clock=lambda: clock[0])
    old = _claims("alice", int(time.time()) - 5)
    assert validity.refusal(old) is not None
    store.path.write_text("{not json")
    clock[0] += 5
    assert validity.refusal(old) is not None


def test_a_file_without_changes_is_written_as_before(
    tmp_path: Path, fast_hasher: PasswordHasher
) -> None:
    """No ``valid_after`` or ``removed`` until they mean something: the previous release
    reads the file too (a rollback)."""
    import json

    store = UserStore(tmp_path / "users.json", fast_hasher)
    store.add("alice", "s3cret-password", "predict")
    written = json.loads(store.path.read_text())
    assert set(written) == {"users"} and set(written["users"]["alice"]) == {
        "password_hash",
        "scopes",
    }
