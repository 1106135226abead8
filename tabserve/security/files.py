"""Private files: secrets, keys and the users file, read with a message that says the fix."""

from __future__ import annotations

import os
from pathlib import Path

from tabserve.core.config import SettingsError

# How to make a mounted secret readable by the service; the docs' image page says more.
UNREADABLE_FIX = (
    "give the service's user or group read access, e.g. mode 0640 and, in a container, "
    '`--group-add "$(stat -c %g FILE)"` (Kubernetes: a Secret volume with defaultMode 0440 '
    "and the pod's fsGroup)"
)


def read_private_file(path: Path, variable: str) -> str:
    """The text of a key or secret file, or a :class:`SettingsError` naming it and the fix.

    Raises:
        SettingsError: the file is missing, unreadable by this process, or not text.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(f"{variable}: {path} does not exist") from None
    except PermissionError:
        raise SettingsError(
            f"{variable}: {path} is not readable by this process (uid {os.getuid()}, "
            f"gid {os.getgid()}, groups {sorted(os.getgroups())}): {UNREADABLE_FIX}"
        ) from None
    except IsADirectoryError:
        raise SettingsError(f"{variable}: {path} is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{variable}: {path} cannot be read: {exc}") from None


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 600 (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
