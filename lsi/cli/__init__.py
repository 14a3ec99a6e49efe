"""The ``lsi`` command line: ``lsi <command> --help`` explains each command.

Each command lives in its own module with a ``register(subparsers)`` function
that adds its parser and sets ``func``; this module only dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("compute", "compare", "merge", "features", "book", "published")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lsi",
        description="Laplace Sample Information: how much each training sample "
                    "informs a model's weights (KL between leave-one-out Laplace posteriors).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name in COMMANDS:
        importlib.import_module(f"lsi.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError, ImportError, OSError) as error:
        print(f"lsi {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
