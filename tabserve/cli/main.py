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
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabserve.security.state import MEMORY_URL, StateStoreError, open_state
from tabserve.security.users import UserError, UserStore, hasher_for, parse_scopes
from tabserve.settings import (
    DEMO_PASSWORD_FILE_NAME,
    MAX_TOKEN_TTL_S,
    Settings,
    SettingsError,
    check_startup,
    load_settings,
)

_MEMORY_NOTE = (
    "TABSERVE_STATE_URL is memory://: each running worker keeps its revocations in its "
    "own memory, out of this command's reach"
)

DEMO_USER = "demo"
DEMO_SCOPES = ("predict", "explain")


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


def _users_add(settings: Settings, args: argparse.Namespace) -> int:
    store = UserStore(settings.resolved_users_file, hasher_for(settings))
    record = store.add(args.name, _read_password(args), args.scopes)
    print(f"user {args.name!r} saved in {store.path} with scopes {record.scopes}")
    return 0


def _users_remove(settings: Settings, args: argparse.Namespace) -> int:
    store = UserStore(settings.resolved_users_file)
    store.remove(args.name)
    print(f"user {args.name!r} removed from {store.path}")
    if settings.state_url == MEMORY_URL:
        print(
            f"note: {_MEMORY_NOTE}; the user's tokens already issued stay valid until they "
            f"expire (at most {settings.token_ttl_s} s for API tokens)",
            file=sys.stderr,
        )
        return 0
    from tabserve.auth import revoke_subject

    asyncio.run(_with_store(settings, lambda store: revoke_subject(store, args.name, settings)))
    print(f"every token issued to {args.name!r} until now is refused from now on")
    return 0


async def _with_store(settings: Settings, action: Any) -> None:
    store = open_state(settings.state_url, settings.state_max_keys)
    try:
        await action(store)
    except StateStoreError as exc:
        raise SettingsError(str(exc)) from None
    finally:
        await store.aclose()


def _users_list(settings: Settings, _: argparse.Namespace) -> int:
    for name, record in sorted(UserStore(settings.resolved_users_file).load().users.items()):
        print(f"{name}\t{','.join(record.scopes)}")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from tabserve.auth import issue_token, verify_token

    if args.sub is None or args.scopes is None:
        raise UserError("`tabserve token` needs --sub and --scopes (or: tabserve token revoke)")
    if args.ttl is not None and not 1 <= args.ttl <= MAX_TOKEN_TTL_S:
        raise UserError(f"--ttl must be between 1 and {MAX_TOKEN_TTL_S} seconds")
    token, ttl = issue_token(settings, args.sub, parse_scopes(args.scopes), args.ttl)
    print(token)
    # On stderr, so `TOKEN=$(tabserve token …)` captures the token alone.
    claims = verify_token(settings, token)
    print(
        f"jti {claims.jti}, expires in {ttl} s (revoke: tabserve token revoke {claims.jti})",
        file=sys.stderr,
    )
    return 0


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from tabserve.auth import revoke_token_id, verify_token
    from tabserve.core.errors import UnauthenticatedError

    if settings.state_url == MEMORY_URL:
        raise SettingsError(
            f"{_MEMORY_NOTE}: revoking needs a shared state store "
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
    asyncio.run(_with_store(settings, lambda store: revoke_token_id(store, jti, ttl)))
    print(f"token {jti} revoked (kept {ttl} s, until it would have expired)")
    return 0


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 600 (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def init_local(settings: Settings, base_url: str = "http://localhost:3000") -> list[str]:
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
        _write_private(settings.secret_file, secrets.token_urlsafe(48) + "\n")
        messages.append(f"generated a local JWT secret in {settings.secret_file}")
    store = UserStore(settings.resolved_users_file)
    password_file = local / DEMO_PASSWORD_FILE_NAME
    if store.get(DEMO_USER) is None:
        password = secrets.token_urlsafe(12)
        store.add(DEMO_USER, password, DEMO_SCOPES)
        _write_private(password_file, password + "\n")
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


def _init_local(settings: Settings, args: argparse.Namespace) -> int:
    for line in init_local(settings, args.base_url):
        print(line)
    return 0


def check_serving(settings: Settings) -> list[str]:
    """Check that the service can start: usable JWT keys and users file, the state store
    answers, the model is present and intact.

    Raises:
        SettingsError: for an unusable key, or a model that is missing, corrupt or
            inconsistent with its schema (the message says which and what to run).
    """
    from tabserve.core.bundle import BundleIntegrityError
    from tabserve.core.predictor import Predictor

    _ = settings.verification_keys
    messages = [f"warning: {w}" for w in check_startup(settings)]
    if settings.state_url != MEMORY_URL:

        async def ping(store: Any) -> None:
            await store.ping()

        asyncio.run(_with_store(settings, ping))
        messages.append(f"ok: state store {open_state(settings.state_url).description} answers")
    try:
        import bentoml
        from bentoml.exceptions import NotFound

        stored = bentoml.models.get(settings.model_tag)
    except NotFound:
        raise SettingsError(
            f"no model {settings.model_tag!r} in the BentoML store "
            f"({os.environ.get('BENTOML_HOME', '~/bentoml')}): run the pipeline "
            "(`dvc repro`) to train and import one, or set TABSERVE_MODEL_TAG"
        ) from None
    try:
        predictor = Predictor.from_bundle(stored.path, version=str(stored.tag.version))
    except BundleIntegrityError as exc:
        raise SettingsError(f"model {stored.tag} cannot be served: {exc}") from None
    lineage = predictor.lineage
    assert lineage is not None  # a verified bundle always has one
    return [
        *messages,
        f"ok: serving {stored.tag} (registry version {lineage.registry_version}, "
        f"run {lineage.mlflow_run_id}, {len(predictor.schema.features)} features, "
        + (
            f"regression of {predictor.schema.target.name!r})"
            if predictor.regression
            else f"classes {predictor.classes})"
        ),
    ]


def _check(settings: Settings, _: argparse.Namespace) -> int:
    for line in check_serving(settings):
        print(line)
    return 0


def serve_argv(settings: Settings, target: str, host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line for ``target`` with the service's settings.

    One place for how tabserve is served (``make serve``, the image's entrypoint): the
    graceful-shutdown timeout comes from ``TABSERVE_SHUTDOWN_GRACE_S``.
    """
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        target,
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        str(settings.shutdown_grace_s),
    ]


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    argv = serve_argv(settings, args.target, args.host, args.port)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # BentoML's server replaces this process: signals reach it
    return 0  # pragma: no cover (exec does not return)


def _drift_report(settings: Settings, args: argparse.Namespace) -> int:
    from tabserve.core.bundle import read_reference
    from tabserve.core.drift_report import drift_page, load_rows
    from tabserve.core.predictor import Predictor

    if args.bundle is not None:
        directory, version = args.bundle, args.bundle.name
    else:
        import bentoml
        from bentoml.exceptions import NotFound

        try:
            stored = bentoml.models.get(settings.model_tag)
        except NotFound:
            raise SettingsError(
                f"no model {settings.model_tag!r} in the BentoML store: set "
                "TABSERVE_MODEL_TAG, or give the bundle's folder with --bundle"
            ) from None
        directory, version = Path(stored.path), str(stored.tag.version)
    from tabserve.core.bundle import BundleIntegrityError

    try:
        predictor = Predictor.from_bundle(directory, version=version)
    except BundleIntegrityError as exc:
        raise SettingsError(f"the model cannot be read: {exc}") from None
    reference = read_reference(directory)
    if reference is None:
        raise SettingsError(f"the bundle {directory} has no drift reference (retrain it)")
    try:
        rows, answers, source = load_rows(args.log, predictor)
    except (OSError, ValueError, KeyError) as exc:
        raise SettingsError(f"cannot read {args.log}: {exc}") from None
    page, report = drift_page(reference, predictor, rows, answers, source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    worst = max(report.feature_psi.items(), key=lambda kv: kv[1])
    print(
        f"wrote {args.out}: {report.rows} rows; largest feature PSI {worst[1]:.3f} "
        f"({worst[0]}); predictions PSI {report.prediction_psi or 0.0:.3f}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tabserve`` command."""
    parser = argparse.ArgumentParser(prog="tabserve", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    users = commands.add_parser("users", help="manage the users file").add_subparsers(
        dest="users_command", required=True
    )
    add = users.add_parser("add", help="add a user (or reset their password and scopes)")
    add.add_argument("name")
    add.add_argument("--scopes", required=True, help="comma-separated: predict,explain,admin")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=_users_add)
    remove = users.add_parser(
        "remove", help="remove a user (and revoke their tokens, with a redis:// state store)"
    )
    remove.add_argument("name")
    remove.set_defaults(handler=_users_remove)
    users.add_parser("list", help="list users and scopes").set_defaults(handler=_users_list)

    token = commands.add_parser(
        "token", help="print a signed token (for automation), or revoke one"
    )
    token.add_argument("--sub", help="subject (user or client name)")
    token.add_argument("--scopes", help="comma-separated scopes")
    token.add_argument(
        "--ttl", type=int, default=None, help=f"lifetime in seconds (at most {MAX_TOKEN_TTL_S})"
    )
    token.set_defaults(handler=_token)
    revoke = token.add_subparsers(dest="token_command").add_parser(
        "revoke",
        help="refuse a token from now on, everywhere (needs a redis:// TABSERVE_STATE_URL)",
    )
    revoke.add_argument("token", help="the token's jti (logged when it was issued) or the token")
    revoke.set_defaults(handler=_token_revoke)

    local = commands.add_parser(
        "init-local", help="create a local secret and demo user if missing (development)"
    )
    local.add_argument("--base-url", default="http://localhost:3000")
    local.set_defaults(handler=_init_local)

    commands.add_parser(
        "check",
        help="check that the service can start (key, users file, model present and intact)",
    ).set_defaults(handler=_check)

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
    serve.set_defaults(handler=_serve)

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
    drift.set_defaults(handler=_drift_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tabserve`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(load_settings(), args))
    except (SettingsError, UserError) as exc:
        print(f"tabserve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
