"""``tabserve token``: print a signed token for automation, or revoke one everywhere."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tabserve.cli.state import MEMORY_NOTE, with_store
from tabserve.core.config import SettingsError
from tabserve.core.errors import UnauthenticatedError
from tabserve.security.revocation import revoke_token_id
from tabserve.security.scopes import UserError, parse_scopes
from tabserve.security.settings import SecuritySettings
from tabserve.security.state import MEMORY_URL
from tabserve.security.tokens import issue_token, verify_token


def token(settings: SecuritySettings, args: argparse.Namespace) -> int:
    if args.sub is None or args.scopes is None:
        raise UserError("`tabserve token` needs --sub and --scopes (or: tabserve token revoke)")
    if args.ttl is not None and not 1 <= args.ttl <= settings.token_max_ttl_s:
        raise UserError(f"--ttl must be between 1 and {settings.token_max_ttl_s} seconds")
    signed, ttl = issue_token(settings, args.sub, parse_scopes(args.scopes), args.ttl)
    print(signed)
    # On stderr, so `TOKEN=$(tabserve token …)` captures the token alone.
    claims = verify_token(settings, signed)
    print(
        f"jti {claims.jti}, expires in {ttl} s (revoke: tabserve token revoke {claims.jti})",
        file=sys.stderr,
    )
    return 0


def token_revoke(settings: SecuritySettings, args: argparse.Namespace) -> int:
    if settings.state_url == MEMORY_URL:
        raise SettingsError(
            f"{MEMORY_NOTE}: revoking needs a shared state store "
            "(TABSERVE_STATE_URL=redis://host:port/db, the same as the service's)"
        )
    given = args.token.strip()
    if given.count(".") == 2:  # a whole token: its own jti and expiry
        try:
            claims = verify_token(settings, given)
        except UnauthenticatedError as exc:  # expired (nothing to revoke) or not ours
            raise UserError(f"not a valid token of this service: {exc.message}") from None
        jti, ttl = claims.jti, claims.exp - int(time.time()) + settings.jwt_leeway_s
    else:
        jti, ttl = given, settings.longest_token_ttl_s
    asyncio.run(with_store(settings, lambda store: revoke_token_id(store, jti, ttl)))
    print(f"token {jti} revoked (kept {ttl} s, until it would have expired)")
    return 0
