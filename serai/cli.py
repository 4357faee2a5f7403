"""The ``serai`` command line.

One console script; each package contributes its own subcommands through a
``register(subparsers)`` function in its ``cli`` module. This is the only edge where
files, environment variables and arguments are read; everything below it takes typed,
validated objects.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from serai import __version__
from serai.errors import SeraiError

__all__ = ["main"]

#: Packages whose ``cli`` module contributes subcommands, in help order.
_CLI_MODULES = (
    "certs.cli",
    "registry.cli",
    "gateway.cli",
    "gateway.messagelog.cli",
    "adapters.cli",
    "serai.demo",
    "serai.bench",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser from every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="serai",
        description="Serai: an interoperability gateway for e-government.",
    )
    parser.add_argument("--version", action="version", version=f"serai {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _CLI_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SeraiError as exc:
        print(f"serai: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
