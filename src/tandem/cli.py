"""The ``tandem`` command line: ``serve``, ``token``, ``migrate``, and the operator's
``export``, ``import``, ``backup`` (``tandem.backup``) and ``doctor`` (``tandem.doctor``).

Every flag maps onto a ``Settings`` field; the same fields can come from
``TANDEM_*`` environment variables (flags win).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tandem import __version__, cli_docs
from tandem.settings import Settings

__all__ = ["main"]


def _doc_rule(text: str) -> tuple[str, str]:
    pattern, sep, permission = text.rpartition("=")
    if not sep or not pattern or permission not in ("read", "write"):
        raise argparse.ArgumentTypeError("use PATTERN=read or PATTERN=write, e.g. 'notes/*=write'")
    return pattern, permission


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem", description="Tandem: real-time collaborative editing server."
    )
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080)")
    serve.add_argument("--data", type=Path, help="data directory (default ./tandem-data)")
    serve.add_argument(
        "--database", help="sqlite:///PATH or postgresql://... (default: SQLite in --data)"
    )
    serve.add_argument("--redis", help="redis://... to run several nodes (default: in-process bus)")
    serve.add_argument("--node-id", help="name of this node in metrics and logs")
    serve.add_argument(
        "--dev", action="store_true", default=None, help="serve development tokens to the demo page"
    )
    serve.add_argument("--hooks", help="Python hooks, package.module:object (docs/extending.md)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    token = commands.add_parser("token", help="print a signed JWT")
    token.add_argument("--user", required=True, help="the 'sub' claim")
    token.add_argument("--name", help="display name (default: the user)")
    token.add_argument(
        "--doc",
        action="append",
        type=_doc_rule,
        metavar="PATTERN=read|write",
        help="document permission (repeatable; default '*=write')",
    )
    token.add_argument(
        "--ttl", type=int, default=3600 * 24, help="lifetime in seconds (default 1 day)"
    )
    token.add_argument("--data", type=Path, help="data directory holding the dev secret")
    token.add_argument(
        "--admin", action="store_true", help="an administrator's token (the /api/admin routes)"
    )
    token.add_argument("--jti", help="a token id, so this one token can be revoked")

    cli_docs.add_parser(commands)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument("--database", help="sqlite:///PATH or postgresql://...")
    migrate.add_argument("--data", type=Path, help="data directory (default ./tandem-data)")
    _operator_commands(commands)
    return parser


def _operator_commands(commands: Any) -> None:
    """``export``, ``import``, ``backup`` (tandem.backup) and ``doctor`` (tandem.doctor)."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--database", help="sqlite:///PATH or postgresql://...")
    store.add_argument("--data", type=Path, help="data directory (default ./tandem-data)")
    export = commands.add_parser(
        "export", parents=[store], help="write documents as JSON Lines (snapshots and ops)"
    )
    export.add_argument("--out", type=Path, help="file to create (default: standard output)")
    export.add_argument("--docs", default="*", help="only documents matching this glob")
    load = commands.add_parser("import", parents=[store], help="load a `tandem export` file")
    load.add_argument("file", type=Path)
    backup = commands.add_parser(
        "backup", parents=[store], help="online, consistent copy of the SQLite database"
    )
    backup.add_argument("file", type=Path, help="the copy to create")
    doctor = commands.add_parser("doctor", parents=[store], help="check this deployment")
    doctor.add_argument("--redis", help="redis://... (default: TANDEM_REDIS_URL)")
    doctor.add_argument("--host", help="interface the server will bind (default 127.0.0.1)")
    doctor.add_argument("--port", type=int, help="port the server will use (default 8080)")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data", None),
        "database_url": getattr(args, "database", None),
        "redis_url": getattr(args, "redis", None),
        "node_id": getattr(args, "node_id", None),
        "dev_mode": getattr(args, "dev", None),
        "hooks": getattr(args, "hooks", None),
    }
    return Settings.from_env(**overrides)


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URLs are printed and logged)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _serve(args: argparse.Namespace) -> int:
    from tandem.runtime import tune_process
    from tandem.server.app import create_app
    from tandem.server.shutdown import CLOSE_GRACE
    from tandem.server.uvicorn_glue import serve

    settings = _settings(args)
    keys = (
        settings.jwt_secret,
        settings.jwt_secrets,
        settings.jwt_public_key_file,
        settings.jwt_jwks_file,
        settings.jwt_jwks_url,
    )
    if not any(keys):
        # Zero configuration: a generated secret, and the demo may hand out tokens.
        settings = settings.replace(dev_mode=True if args.dev is None else args.dev)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from tandem.redaction import TokenRedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(TokenRedactingFilter())
    app = create_app(settings)
    url = settings.base_url
    lines = [f"Tandem {__version__} on {url}  (node {settings.node_id})"]
    storage = _redact(settings.database_url) or f"SQLite in {settings.data_dir}"
    lines.append(f"  storage: {storage}")
    lines.append(f"  bus:     {_redact(settings.redis_url) or 'in-process'}")
    # A token is printed in development mode only: on stdout, never through a
    # logger. Production prints none (its tokens come from the identity provider
    # or `tandem token`), so no container log ever holds one.
    token = _dev_token(settings) if settings.dev_mode else None
    if token is not None:
        ws = url.replace("http", "ws", 1)
        lines.append(f"  demo:    {_demo_line(url)}   (development mode)")
        lines.append(f"  token:   {token}")
        header = f'-H "Authorization: Bearer {token}"'
        lines.append(f'  try:     wscat -c "{ws}/collab?doc=hello" {header}')
    else:
        lines.append("  tokens:  from your identity provider, or `tandem token` (none printed)")
    print("\n".join(lines), flush=True)
    # The GIL switch interval and the garbage collector's policy (see tandem.runtime):
    # a finished commit must not wait behind a long fan-out, nor every document behind
    # a full collection of every socket's objects.
    tune_process()
    # Shutdown (tandem.server.shutdown): the first SIGTERM or SIGINT drains for at
    # most shutdown_timeout; uvicorn then waits for the closing handshakes and runs
    # the lifespan's end, and a watchdog ends the process if that overruns.
    serve(
        app,
        app.state.tandem,
        log_level=args.log_level,
        deadline=settings.shutdown_timeout + CLOSE_GRACE,
    )
    return 0


def _demo_line(url: str) -> str:
    """Where the demo is, or why it is not served (``tandem.assets``)."""
    from tandem.assets import find_assets

    missing = find_assets().missing()
    if not missing:
        return f"{url}/"
    return f"not available: {missing[0]} is missing (run npm install in client/)"


def _dev_token(settings: Settings) -> str | None:
    """A day-long ``*=write`` token for development mode, or None (public keys only)."""
    from tandem.auth_keys import load_authenticator

    try:
        return load_authenticator(settings, data_dir=settings.data_dir).issue(
            "dev", name="Developer", docs={"*": "write"}, ttl=24 * 3600, now=time.time()
        )
    except Exception:  # noqa: BLE001 - a public-key-only setup cannot issue tokens
        return None


def _token(args: argparse.Namespace) -> int:
    from tandem.auth_keys import load_authenticator

    settings = _settings(args)
    docs: dict[str, Literal["read", "write"]] = dict(args.doc) if args.doc else {"*": "write"}
    unsigned = not settings.jwt_secret and not settings.jwt_secrets
    if unsigned and not (settings.data_dir / "dev-secret").is_file():
        # Creating a secret here would print tokens no server verifies.
        print(
            "tandem token: no signing secret. Set TANDEM_JWT_SECRET (the server's), "
            f"or point --data at the directory of a development server "
            f"({settings.data_dir} holds no dev-secret).",
            file=sys.stderr,
        )
        return 2
    authenticator = load_authenticator(settings, data_dir=settings.data_dir)
    token = authenticator.issue(
        args.user,
        name=args.name,
        docs=docs,
        ttl=args.ttl,
        now=time.time(),
        admin=args.admin,
        token_id=args.jti,
    )
    print(token)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from tandem.storage import migrate

    settings = _settings(args)
    asyncio.run(migrate(settings.database_url, settings.data_dir))
    print("migrations applied")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from tandem.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except SettingsError as error:
        # Refused at start-up, before anything listens: every mistake at once.
        print(f"tandem: {error}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "token":
        return _token(args)
    if args.command == "migrate":
        return _migrate(args)
    if args.command in ("export", "import", "backup"):
        from tandem import backup

        settings = _settings(args)
        url, data = settings.database_url, settings.data_dir
        if args.command == "export":
            return backup.run_export(url, data, args.out, args.docs)
        if args.command == "import":
            return backup.run_import(url, data, args.file)
        return backup.run_backup(url, data, args.file)
    if args.command == "doctor":
        from tandem.doctor import run_doctor

        return run_doctor(_settings(args))
    if args.command == "docs":
        return cli_docs.run(args, _settings(args))
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
