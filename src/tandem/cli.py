"""The ``tandem`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tandem import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tandem", description="Tandem: real-time collaborative editing server."
    )
    parser.add_argument("--version", action="version", version=f"tandem {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
