"""The ``tabserve`` console command: users, tokens and the local development setup.

Examples::

    tabserve users add alice --scopes predict,explain      # password prompted
    echo "$PASSWORD" | tabserve users add ci --scopes predict --password-stdin
    tabserve users remove alice
    tabserve users list
    tabserve token --sub ci --scopes predict               # prints a signed JWT
    tabserve token revoke <jti or token>                   # refused from now on (Redis state)
    tabserve init-local                                    # local secret + demo user
    tabserve check                                         # can the service start?
    tabserve serve --port 3000                             # bentoml serve, with our settings
    tabserve drift-report --log /var/log/tabserve          # served rows vs the training data
    tabserve score customers.csv scores.parquet            # the @champion over a file
    tabserve score parts/ scores/ --engine spark           # ... as a Spark UDF
    tabserve live-report --snapshot                        # champion vs shadow, live rows
    tabserve export-labelled served.parquet                # labelled served rows, to retrain
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tabserve.cli import local as local_command
from tabserve.cli import record as record_commands
from tabserve.cli import score as score_command
from tabserve.cli import serving as serving_commands
from tabserve.cli import tokens as token_commands
from tabserve.cli import users as user_commands
from tabserve.core.config import SettingsError
from tabserve.security.scopes import UserError
from tabserve.security.settings import MAX_TOKEN_TTL_S
from tabserve.serving.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tabserve`` command."""
    parser = argparse.ArgumentParser(prog="tabserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    users = commands.add_parser("users", help="manage the users file").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add a user (or reset their password and scopes)")
    add.add_argument("name")
    add.add_argument(
        "--scopes", required=True, help="comma-separated: predict,explain,feedback,admin"
    )
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=user_commands.users_add)
    remove = users.add_parser(
        "remove", help="remove a user (and revoke their tokens, with a redis:// state store)"
    )
    remove.add_argument("name")
    remove.set_defaults(handler=user_commands.users_remove)
    users.add_parser("list", help="list users and scopes").set_defaults(
        handler=user_commands.users_list
    )

    token = commands.add_parser(
        "token", help="print a signed token (for automation), or revoke one"
    )
    token.add_argument("--sub", help="subject (user or client name)")
    token.add_argument("--scopes", help="comma-separated scopes")
    token.add_argument(
        "--ttl",
        type=int,
        default=None,
        help=f"lifetime in seconds (at most TABSERVE_TOKEN_MAX_TTL_S, {MAX_TOKEN_TTL_S} s "
        "by default)",
    )
    token.set_defaults(handler=token_commands.token)
    revoke = token.add_subparsers(dest="token_command").add_parser(
        "revoke",
        help="refuse a token from now on, everywhere (needs a redis:// TABSERVE_STATE_URL)",
    )
    revoke.add_argument("token", help="the token's jti (logged when it was issued) or the token")
    revoke.set_defaults(handler=token_commands.token_revoke)

    local = commands.add_parser(
        "init-local", help="create a local secret and demo user if missing (development)"
    )
    local.add_argument("--base-url", default="http://localhost:3000")
    local.set_defaults(handler=local_command.run)

    commands.add_parser(
        "check",
        help="check that the service can start (key, users file, model present and intact)",
    ).set_defaults(handler=serving_commands.check)

    serve = commands.add_parser(
        "serve",
        help="run `bentoml serve` with the service's settings (graceful shutdown timeout)",
    )
    serve.add_argument(
        "--target",
        default="service:Tabserve",
        help="what to serve: the service import path or a bento's path (default: %(default)s)",
    )
    serve.add_argument(
        "--host", default=os.environ.get("BENTOML_HOST", "0.0.0.0"), help="bind address"
    )
    serve.add_argument(
        "--port", type=int, default=int(os.environ.get("BENTOML_PORT", "3000")), help="port"
    )
    serve.set_defaults(handler=serving_commands.serve)

    drift = commands.add_parser(
        "drift-report",
        help="an HTML page of served rows (an inference log, or a CSV/Parquet of rows) "
        "against the model's training reference",
    )
    drift.add_argument(
        "--log",
        type=Path,
        required=True,
        help="an inference log (its folder or one .jsonl file), or a .csv/.parquet of rows",
    )
    drift.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="the model's bundle folder (default: TABSERVE_MODEL_TAG in the BentoML store)",
    )
    drift.add_argument(
        "--out",
        type=Path,
        default=Path("build/drift-report.html"),
        help="the page to write (default: %(default)s)",
    )
    drift.set_defaults(handler=serving_commands.drift_report)
    score_command.add_parser(commands)
    record_commands.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tabserve`` console script."""
    args = build_parser().parse_args(argv)
    try:
        # A command that reads none of the service's settings (score) runs without them:
        # scoring a file needs no JWT secret or users file.
        settings = load_settings() if getattr(args, "needs_settings", True) else None
        return int(args.handler(settings, args))
    except (SettingsError, UserError) as exc:
        print(f"tabserve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
