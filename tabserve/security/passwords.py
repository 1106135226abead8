"""How passwords are hashed: argon2id with OWASP's parameters."""

from __future__ import annotations

from typing import Protocol

from argon2 import PasswordHasher

# OWASP's recommended minimum for argon2id (Password Storage Cheat Sheet): 19 MiB,
# 2 passes, 1 lane. About 35 ms per verification on one core.
ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19_456
ARGON2_PARALLELISM = 1
# The most memory the concurrent password verifications of one worker may take.
MAX_LOGIN_MEMORY_KIB = 512 * 1024


class HashingSettings(Protocol):
    """The settings a hasher is made from (``TABSERVE_ARGON2_*``)."""

    argon2_time_cost: int
    argon2_memory_kib: int
    argon2_parallelism: int


def password_hasher(
    time_cost: int = ARGON2_TIME_COST,
    memory_kib: int = ARGON2_MEMORY_KIB,
    parallelism: int = ARGON2_PARALLELISM,
) -> PasswordHasher:
    """The argon2id hasher; OWASP's recommended minimum (19 MiB, 2 passes, 1 lane) by
    default, rather than argon2-cffi's 64 MiB profile: a server verifies several at once.

    Hashes made with other parameters still verify (argon2 reads them from the hash)."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


def hasher_for(settings: HashingSettings) -> PasswordHasher:
    """The hasher configured by ``TABSERVE_ARGON2_*``."""
    return password_hasher(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )
