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


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors the library raises on purpose, each with a message for the user.

    Bad input (``ValueError``, ``TypeError``, ``KeyError``), missing files, data or
    packages (``OSError``, ``ImportError``), numeric failure
    (:class:`lsi.validation.NonFiniteError`, an ``ArithmeticError``), a tier that
    does not apply (:class:`lsi.training.SolverDoesNotApply`) and a factorisation
    that fails (``torch.linalg.LinAlgError``). Anything else is a bug and keeps its traceback.
    """
    import torch

    from lsi.training import SolverDoesNotApply

    return (ValueError, TypeError, KeyError, OSError, ImportError, ArithmeticError, SolverDoesNotApply,
            torch.linalg.LinAlgError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected error is one line ``lsi <command>: error: ...`` on stderr and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except expected_errors() as error:
        message = " ".join(str(error.args[0] if isinstance(error, KeyError) and error.args else error).split())
        print(f"lsi {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
