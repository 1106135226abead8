"""The users file: user names, argon2id password hashes and granted scopes.

Layout (JSON, written with mode 640: the owner's group may read it, so that a container
given that group, ``--group-add``, can read a read-only mount of it; nobody else can)::

    {"users": {"alice": {"password_hash": "$argon2id$...", "scopes": ["predict"]}}}

Passwords are never stored or logged; only their argon2id hashes are.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tabserve.core.config import SettingsError
from tabserve.security.files import read_private_file
from tabserve.security.passwords import password_hasher
from tabserve.security.scopes import UserError, parse_scopes

__all__ = [
    "UserError",
    "UserRecord",
    "UserStore",
    "UsersFile",
    "UsersFileError",
    "check_users_file",
    "parse_scopes",
]

logger = logging.getLogger("tabserve.users")
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
USERS_FILE_MODE = 0o640


class UsersFileError(SettingsError):
    """The users file cannot be used (missing, unreadable or invalid); the message says why."""


class UserRecord(BaseModel):
    """One user: the argon2id hash of their password, their scopes, and since when their
    tokens are good (``valid_after``, epoch seconds: set when a password or the scopes
    of an existing user change; tokens issued before are refused)."""

    model_config = ConfigDict(extra="forbid")

    password_hash: str
    scopes: list[str] = Field(default_factory=list)
    valid_after: int | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        return parse_scopes(scopes)


class UsersFile(BaseModel):
    """The whole users file: the users, and the names removed with when (every token of
    a removed name issued before then is refused; a name is forgotten once no such token
    can still be valid, :data:`REMOVED_KEPT_S`)."""

    model_config = ConfigDict(extra="forbid")

    users: dict[str, UserRecord] = Field(default_factory=dict)
    removed: dict[str, int] = Field(default_factory=dict)


# How long a removed name is remembered: longer than any token may live (one day, the
# longest `tabserve token --ttl`), with a margin for clock skew.
REMOVED_KEPT_S = 2 * 86_400


def change_time() -> int:
    """Now, rounded up to the second: a token's ``iat`` (whole seconds) before it is
    older than the change; a token issued in the same second is refused too (log in
    again a second later), never one issued before the change accepted."""
    return math.ceil(time.time())


def check_users_file(path: str | Path) -> UsersFile:
    """Read and validate the users file, or fail with a message naming it and the fix.

    Raises:
        UsersFileError: the file is missing, unreadable by this process, or not a valid
            users file.
    """
    path = Path(path)
    variable = "TABSERVE_USERS_FILE"
    if not path.exists():
        raise UsersFileError(
            f"{variable}: {path} does not exist; create it with "
            "`tabserve users add NAME --scopes predict` (a file with no users is "
            '`{"users": {}}`)'
        )
    try:
        text = read_private_file(path, variable)
    except SettingsError as exc:
        raise UsersFileError(str(exc)) from None
    try:
        return UsersFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise UsersFileError(
            f"{variable}: {path} is not a valid users file ({exc.error_count()} problem(s), "
            f"first at {where}: {first['msg']}); write it with `tabserve users add`"
        ) from None


class UserStore:
    """Reads and writes the users file; verifies passwords.

    Args:
        path: the users file (created on the first :meth:`add`).
        hasher: argon2 hasher; the default profile unless a test needs a cheaper one.
    """

    def __init__(self, path: str | Path, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.hasher = hasher or password_hasher()
        # Verifying against a throw-away hash for unknown users keeps the timing of
        # "no such user" and "wrong password" alike.
        self._dummy_hash: str | None = None

    def load(self) -> UsersFile:
        """The users file's content (empty if the file does not exist)."""
        if not self.path.exists():
            return UsersFile()
        return UsersFile.model_validate_json(self.path.read_text())

    def save(self, content: UsersFile) -> None:
        """Write the users file atomically: owner read-write, group read, others nothing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                # Only what is set: a file with no removal or change reads as before (and
                # by the previous release, for a rollback).
                handle.write(content.model_dump_json(indent=2, exclude_defaults=True) + "\n")
            os.chmod(tmp, USERS_FILE_MODE)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, name: str, password: str, scopes: str | Iterable[str]) -> UserRecord:
        """Add a user, or replace their password and scopes.

        Raises:
            UserError: for an invalid name, an empty password or an unknown scope.
        """
        if not re.fullmatch(_NAME_PATTERN, name):
            raise UserError(f"invalid user name {name!r}: letters, digits, _.@- (max 64)")
        if len(password) < 8:
            raise UserError("the password must be at least 8 characters")
        record = UserRecord(password_hash=self.hasher.hash(password), scopes=parse_scopes(scopes))
        content = self.load()
        if name in content.users or name in content.removed:
            # A new password or new scopes: what was issued under the old ones ends now.
            record.valid_after = change_time()
            content.removed.pop(name, None)
        content.users[name] = record
        self.save(content)
        return record

    def remove(self, name: str) -> None:
        """Remove a user.

        Raises:
            UserError: if there is no such user.
        """
        content = self.load()
        if name not in content.users:
            raise UserError(f"no user named {name!r} in {self.path}")
        del content.users[name]
        now = change_time()
        content.removed = {n: t for n, t in content.removed.items() if t > now - REMOVED_KEPT_S}
        content.removed[name] = now
        self.save(content)

    def get(self, name: str) -> UserRecord | None:
        """The record of ``name``, or None."""
        return self.load().users.get(name)

    def authenticate(self, name: str, password: str) -> UserRecord | None:
        """The user's record if ``password`` is theirs, else None (same cost either way).

        A right password whose hash was made with other argon2 parameters than the
        hasher's is re-hashed with the current ones (see :meth:`rehash`).
        """
        record = self.get(name)
        if record is None:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash("not-a-real-password")
            with contextlib.suppress(VerificationError, InvalidHashError):
                self.hasher.verify(self._dummy_hash, password)
            return None
        try:
            self.hasher.verify(record.password_hash, password)
        except VerifyMismatchError:
            return None
        except (VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(record.password_hash):
            self.rehash(name, record, password)
        return record

    def rehash(self, name: str, record: UserRecord, password: str) -> bool:
        """Store a new hash of ``password`` (just verified) with the current parameters.

        Best effort: the users file is often a read-only mount (a Kubernetes or compose
        secret); then the old hash stays, and keeps working. Returns whether it was saved.
        """
        try:
            content = self.load()
            current = content.users.get(name)
            if current is None or current.password_hash != record.password_hash:
                return False  # changed meanwhile (e.g. `tabserve users add`): keep theirs
            current.password_hash = self.hasher.hash(password)
            self.save(content)
        except OSError as exc:
            logger.warning(
                "could not re-hash the password of %r with the current argon2 parameters "
                "(%s): the old hash keeps working; re-run `tabserve users add` to update it",
                name,
                exc.strerror or exc,
            )
            return False
        logger.info("re-hashed the password of %r with the current argon2 parameters", name)
        return True
