"""``tandem docs list|show|delete|copy|rename|export|import|renew``: documents from a shell.

``export`` and ``import`` are ``tandem export`` and ``tandem import``
(``tandem.backup``: JSON Lines, straight from and to the database named by
``--database``/``--data``); ``renew`` starts new incarnations there, after a
restore with other tools (run it with the nodes stopped). The others talk to
a running server (``--url``, default the configured host and port) through
the admin API, with an admin token: ``--token`` or ``TANDEM_ADMIN_TOKEN``,
else one minted for a minute from the configured secret (``jwt_secret``, or
the development secret in
``--data``), as ``tandem token --admin`` would. Prints JSON; exits 1 with the
server's error code and message on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tandem.settings import Settings

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    docs = commands.add_parser(
        "docs", help="list, show, delete, copy, rename, export, import or renew documents"
    )
    docs.add_argument("--url", help="the server (default http://HOST:PORT from the settings)")
    docs.add_argument("--token", help="an admin token (default: $TANDEM_ADMIN_TOKEN, or minted)")
    docs.add_argument("--data", type=Path, help="data directory (dev secret, SQLite database)")
    docs.add_argument("--database", help="export/import/renew: sqlite:///PATH or postgresql://...")
    actions = docs.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="documents with version, last activity, clients")
    listing.add_argument("--prefix", default="", help="only ids starting with this")
    listing.add_argument(
        "--limit", type=int, default=1000, help="at most this many, in id order (default 1000)"
    )
    actions.add_parser("show", help="one document in detail").add_argument("doc")
    delete = actions.add_parser("delete", help="delete a document (a tombstone stays)")
    delete.add_argument("doc")
    delete.add_argument("--erase", action="store_true", help="leave no row at all (GDPR)")
    export = actions.add_parser("export", help="write documents as JSON Lines (tandem export)")
    export.add_argument("--out", type=Path, help="file to create (default: standard output)")
    export.add_argument("--docs", default="*", help="only documents matching this glob")
    actions.add_parser("import", help="load a `tandem docs export` file").add_argument(
        "file", type=Path
    )
    renew = actions.add_parser(
        "renew", help="after a restore: new incarnations (clients resync; nodes stopped)"
    )
    renew.add_argument("docs", nargs="?", default="*", help="documents matching this glob")
    for name in ("copy", "rename"):
        action = actions.add_parser(name, help=f"{name} a document to a new id")
        action.add_argument("source")
        action.add_argument("target")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.action in ("export", "import", "renew"):
        from tandem import backup

        if args.action == "renew":
            return backup.run_renew(settings.database_url, settings.data_dir, args.docs)
        if args.action == "export":
            return backup.run_export(settings.database_url, settings.data_dir, args.out, args.docs)
        return backup.run_import(settings.database_url, settings.data_dir, args.file)
    url = (args.url or settings.base_url).rstrip("/") + "/api/admin"
    token = args.token or os.environ.get("TANDEM_ADMIN_TOKEN") or _mint(settings)
    headers = {"Authorization": f"Bearer {token}"}
    action = args.action
    with httpx.Client(headers=headers, timeout=30) as http:
        if action == "list":
            response = http.get(f"{url}/docs", params={"prefix": args.prefix, "limit": args.limit})
        elif action == "show":
            response = http.get(f"{url}/docs/{args.doc}")
        elif action == "delete":
            response = http.delete(f"{url}/docs/{args.doc}", params={"erase": args.erase})
        else:
            response = http.post(
                f"{url}/docs/{action}", json={"from": args.source, "to": args.target}
            )
    body: Any = response.json() if response.content else None
    if response.is_error:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        print(f"error {response.status_code}: {json.dumps(detail)}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0


def _mint(settings: Settings) -> str:
    from tandem.auth_keys import load_authenticator

    authenticator = load_authenticator(settings, data_dir=settings.data_dir)
    return authenticator.issue("tandem-cli", admin=True, docs={}, ttl=60, now=time.time())
