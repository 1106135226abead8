"""``tabserve users``: add (or reset), remove and list the users of the users file."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from tabserve.cli.state import with_store
from tabserve.security.passwords import hasher_for
from tabserve.security.revocation import revoke_subject
from tabserve.security.scopes import UserError
from tabserve.security.settings import SecuritySettings
from tabserve.security.state import MEMORY_URL
from tabserve.security.users import UserStore


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("repeat: ") != password:
            raise UserError("the passwords differ")
    if not password:
        raise UserError("empty password")
    return password


def users_add(settings: SecuritySettings, args: argparse.Namespace) -> int:
    store = UserStore(settings.resolved_users_file, hasher_for(settings))
    record = store.add(args.name, _read_password(args), args.scopes)
    print(f"user {args.name!r} saved in {store.path} with scopes {record.scopes}")
    if record.valid_after is not None:
        print(
            f"their tokens and UI sessions issued before are refused from now on, within a "
            f"second, by every server that reads {store.path}"
        )
    return 0


def users_remove(settings: SecuritySettings, args: argparse.Namespace) -> int:
    store = UserStore(settings.resolved_users_file)
    store.remove(args.name)
    print(f"user {args.name!r} removed from {store.path}")
    print(
        f"every token and UI session issued to {args.name!r} until now is refused from now "
        f"on, within a second, by every server that reads {store.path}"
    )
    if settings.state_url != MEMORY_URL:  # and at once, through the shared state store
        asyncio.run(with_store(settings, lambda s: revoke_subject(s, args.name, settings)))
    return 0


def users_list(settings: SecuritySettings, _: argparse.Namespace) -> int:
    for name, record in sorted(UserStore(settings.resolved_users_file).load().users.items()):
        print(f"{name}\t{','.join(record.scopes)}")
    return 0
