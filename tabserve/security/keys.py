"""The key material tokens are signed and verified with, and the checks a secret passes.

A :class:`KeyRing` is made once per settings object
(``settings.keys``): the current key signs, the current and the previous ones still
listed verify, each known by its ``kid``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from tabserve.core.config import SettingsError
from tabserve.security.files import read_private_file


class KeySettings(Protocol):
    """The settings the keys are read from (the security section's ``jwt_*``)."""

    @property
    def jwt_algorithm(self) -> str:
        """``HS256`` or ``RS256``."""

    @property
    def jwt_private_key_file(self) -> Path | None:
        """The RS256 private key."""

    @property
    def jwt_public_key_file(self) -> Path | None:
        """The RS256 public key."""

    @property
    def jwt_previous_secrets(self) -> Sequence[SecretStr]:
        """Earlier HS256 secrets still accepted."""

    @property
    def jwt_previous_public_key_files(self) -> Sequence[Path]:
        """Earlier RS256 public keys still accepted."""

    def raw_secret(self) -> str:
        """The HS256 secret as configured."""


MIN_SECRET_BYTES = 32
# Values people paste from examples; refused even when long enough.
_PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "replace-me",
    "replace_me",
    "your-secret",
    "your_secret",
    "placeholder",
    "example",
    "dummy",
    "insecure",
    "xxxxxxxx",
)


def check_secret(secret: str) -> str:
    """Return ``secret`` if it is usable as an HS256 key.

    Raises:
        SettingsError: if it is shorter than 32 bytes or looks like a placeholder.
    """
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes "
            f"(got {len(secret.encode('utf-8'))})"
        )
    lowered = secret.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS) or len(set(secret)) < 8:
        raise SettingsError("the JWT secret looks like a placeholder; generate a random one")
    return secret


def key_id(algorithm: str, key: str) -> str:
    """The ``kid`` of a verification key: sha256 of a fixed prefix and the key, first 16
    hex digits. It changes when the key is rotated, so tokens signed with an earlier key
    are told apart; it reveals nothing usable about an HS256 secret."""
    digest = hashlib.sha256(b"tabserve-kid\0" + key.encode()).hexdigest()
    return f"{algorithm.lower()}-{digest[:16]}"


@dataclass(frozen=True)
class KeyRing:
    """The keys of one configuration.

    Attributes:
        algorithm: ``HS256`` or ``RS256``.
        signing_key: the HS256 secret or the RS256 private key PEM ("" when this
            configuration only verifies: RS256 without a private key).
        key_id: the ``kid`` of issued tokens (the current verification key's).
        verification_keys: every key a token may be verified with, by ``kid``: the
            current first, then the previous ones still listed.
    """

    algorithm: str
    signing_key: str
    key_id: str
    verification_keys: dict[str, str]

    @property
    def verification_key(self) -> str:
        """The current verification key."""
        return self.verification_keys[self.key_id]

    @classmethod
    def load(cls, settings: KeySettings) -> KeyRing:
        """Read and check the keys ``settings`` name.

        Raises:
            SettingsError: the secret is missing, short or a placeholder; a key file is
                missing or unreadable; a previous secret is unusable.
        """
        algorithm = settings.jwt_algorithm
        if algorithm == "RS256":
            assert settings.jwt_public_key_file is not None  # checked by the settings
            signing = ""
            if settings.jwt_private_key_file is not None:
                signing = read_private_file(
                    settings.jwt_private_key_file, "TABSERVE_JWT_PRIVATE_KEY_FILE"
                )
            current = read_private_file(
                settings.jwt_public_key_file, "TABSERVE_JWT_PUBLIC_KEY_FILE"
            )
            previous = [
                read_private_file(path, "TABSERVE_JWT_PREVIOUS_PUBLIC_KEY_FILES")
                for path in settings.jwt_previous_public_key_files
            ]
        else:
            signing = current = check_secret(settings.raw_secret())
            previous = [check_secret(s.get_secret_value()) for s in settings.jwt_previous_secrets]
        keys = {key_id(algorithm, current): current}
        for key in previous:
            keys.setdefault(key_id(algorithm, key), key)
        return cls(algorithm, signing, key_id(algorithm, current), keys)

    def require_signing_key(self) -> str:
        """The signing key.

        Raises:
            SettingsError: RS256 without ``TABSERVE_JWT_PRIVATE_KEY_FILE``.
        """
        if not self.signing_key:
            raise SettingsError("issuing RS256 tokens needs TABSERVE_JWT_PRIVATE_KEY_FILE")
        return self.signing_key
