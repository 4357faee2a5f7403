"""``serai adapter``: run the example agencies of the reference scenario.

::

    serai adapter init tax|cadastre|property --config FILE [--listen HOST:PORT]
        [--database PATH] [--gateway HOST:PORT]
    serai adapter run tax|cadastre|property --config FILE
    serai adapter sample-data tax|cadastre|property --out FILE [--seed N]

``init`` writes a configuration (never over an existing file); ``run`` serves the
agency until SIGINT or SIGTERM, with JSON event lines on stderr (``adapter_listening``
with the bound address, ``adapter_stopped``); ``sample-data`` writes the sample database
``run`` would create. See docs/adapters.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from adapters.agencies.config import AGENCY_NAMES, load_config, parse_config, render_config
from adapters.agencies.run import run_adapter
from adapters.agencies.sampledata import SEED, create_sample_database, row_count
from serai.errors import ConfigError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``serai adapter …`` to the top-level parser."""
    adapter = subparsers.add_parser(
        "adapter",
        help="the example agencies: tax, cadastre, property registration",
        description="Run the example agencies of the reference scenario (see docs/adapters.md).",
    )
    sub = adapter.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser("init", help="write an agency's configuration file")
    init.add_argument("agency", choices=AGENCY_NAMES)
    init.add_argument("--config", required=True, type=Path, help="the file to write")
    init.add_argument("--listen", help="IS port HOST:PORT (default: the agency's own)")
    init.add_argument("--database", help="SQLite file (default: AGENCY.db beside the config)")
    init.add_argument(
        "--gateway", default="127.0.0.1:5500", help="property: the local gateway's IS port"
    )
    init.set_defaults(handler=_cmd_init)

    run = sub.add_parser("run", help="serve an agency until SIGINT or SIGTERM")
    run.add_argument("agency", choices=AGENCY_NAMES)
    run.add_argument("--config", required=True, type=Path, help="the agency's TOML file")
    run.set_defaults(handler=_cmd_run)

    sample = sub.add_parser("sample-data", help="write an agency's sample database")
    sample.add_argument("agency", choices=AGENCY_NAMES)
    sample.add_argument("--out", required=True, type=Path, help="the SQLite file to create")
    sample.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    sample.set_defaults(handler=_cmd_sample_data)


def _cmd_init(args: argparse.Namespace) -> int:
    text = render_config(
        args.agency, listen=args.listen, database=args.database, gateway=args.gateway
    )
    parse_config(args.agency, args.config, text)  # refuse bad --listen etc. before writing
    try:
        with args.config.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError as exc:
        raise ConfigError(f"{args.config}: already exists (not overwritten)") from exc
    except OSError as exc:
        raise ConfigError(f"{args.config}: cannot be written: {exc.strerror}") from exc
    print(f"wrote {args.config}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.agency, args.config)
    asyncio.run(run_adapter(config))
    return 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise ConfigError(f"--seed: expected a non-negative integer, got {args.seed}")
    if not create_sample_database(args.agency, args.out, seed=args.seed):
        raise ConfigError(f"{args.out}: already exists (not overwritten)")
    uri = f"{args.out.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        rows = row_count(connection)
    print(f"wrote {args.out}: {rows} rows of {args.agency} sample data (seed {args.seed})")
    return 0
