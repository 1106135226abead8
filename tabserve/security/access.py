"""Whether a verified token still stands for its user: access ends when the user changes.

The users file records, per user, since when their tokens are good (``valid_after``: set
when ``tabserve users add`` replaces a password or scopes) and, per removed name, when
it was removed. :class:`UserValidity` re-reads the file when it changes (looked at once
a second at most) and refuses a token issued before its user's change. The file is the
one every worker and replica already reads for logins, so this holds with the
per-worker ``memory://`` state store as with Redis, within a second of the change.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from tabserve.security.tokens import Claims
from tabserve.security.users import UsersFile

logger = logging.getLogger("tabserve.auth")

RECHECK_S = 1.0


class UserValidity:
    """The users file's ``valid_after`` times and removed names, kept current.

    Args:
        path: the users file.
        recheck_s: how often, at most, the file's identity (inode, size, mtime) is looked at.
        clock: a monotonic time source (seconds).
    """

    def __init__(
        self, path: Path, recheck_s: float = RECHECK_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.recheck_s = recheck_s
        self._clock = clock
        self._checked = -float("inf")
        self._seen: tuple[int, int, int] | None = None
        self._valid_after: dict[str, int] = {}
        self._removed: dict[str, int] = {}

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._checked < self.recheck_s:
            return
        self._checked = now
        try:
            stat = os.stat(self.path)
        except OSError:
            return  # no users file (yet): nothing is known against any token
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity == self._seen:
            return
        try:
            content = UsersFile.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as exc:
            # Keep what was known: a file caught half-written, or broken, must not
            # restore tokens it had ended.
            logger.warning("users file %s not re-read (%s); keeping what was known", self.path, exc)
            return
        self._seen = identity
        self._valid_after = {
            name: record.valid_after
            for name, record in content.users.items()
            if record.valid_after is not None
        }
        self._removed = dict(content.removed)

    def refusal(self, claims: Claims) -> str | None:
        """Why ``claims``' token no longer stands for its user, or None if it does."""
        self._refresh()
        removed = self._removed.get(claims.sub)
        if removed is not None and claims.iat < removed:
            return "the user was removed"
        valid_after = self._valid_after.get(claims.sub)
        if valid_after is not None and claims.iat < valid_after:
            return "the user's password or scopes changed after this token was issued"
        return None
