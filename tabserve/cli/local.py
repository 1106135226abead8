"""``tabserve init-local``: a local secret and a demo user, for development only."""

from __future__ import annotations

import argparse
import os
import secrets

from tabserve.core.config import SettingsError
from tabserve.security.files import write_private_file
from tabserve.security.settings import DEMO_PASSWORD_FILE_NAME, SecuritySettings
from tabserve.security.users import UserStore

DEMO_USER = "demo"
# The local demo user may do everything but administer: predict, explain, and send the
# ground truth of its answers back (POST /feedback).
DEMO_SCOPES = ("predict", "explain", "feedback")


def init_local(settings: SecuritySettings, base_url: str = "http://localhost:3000") -> list[str]:
    """Create the local secret and demo user if missing; return the login instructions.

    Everything lives in ``settings.local_dir`` (git-ignored by a ``.gitignore``
    inside it). Nothing is generated in production.

    Raises:
        SettingsError: with ``TABSERVE_ENV=production``.
    """
    if settings.env == "production":
        raise SettingsError(
            "init-local generates development credentials; with TABSERVE_ENV=production "
            "set TABSERVE_JWT_SECRET (or _FILE) and manage users with `tabserve users add`"
        )
    local = settings.local_dir
    local.mkdir(parents=True, exist_ok=True)
    os.chmod(local, 0o700)
    ignore = local / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# generated credentials: never commit\n*\n")
    messages = []
    if settings.jwt_secret is None and not settings.secret_file.exists():
        settings.secret_file.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(settings.secret_file, secrets.token_urlsafe(48) + "\n")
        messages.append(f"generated a local JWT secret in {settings.secret_file}")
    store = UserStore(settings.resolved_users_file)
    password_file = local / DEMO_PASSWORD_FILE_NAME
    if store.get(DEMO_USER) is None:
        password = secrets.token_urlsafe(12)
        store.add(DEMO_USER, password, DEMO_SCOPES)
        write_private_file(password_file, password + "\n")
        messages.append(f"created user {DEMO_USER!r} in {store.path}")
    if password_file.exists():
        password = password_file.read_text().strip()
        messages += [
            f"log in as {DEMO_USER!r} with password {password!r} (kept in {password_file}):",
            f"  browser: {base_url}/ui/",
            f"  curl -s -X POST {base_url}/auth/token "
            f"-d username={DEMO_USER} -d password='{password}'",
            f'  curl -s -X POST {base_url}/predict -H "Authorization: Bearer $TOKEN" '
            "-H 'Content-Type: application/json' -d '{\"rows\": [...]}'",
        ]
    else:
        messages.append(f"user {DEMO_USER!r} exists; its password is not stored here")
    return messages


def run(settings: SecuritySettings, args: argparse.Namespace) -> int:
    for line in init_local(settings, args.base_url):
        print(line)
    return 0
