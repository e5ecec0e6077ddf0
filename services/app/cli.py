"""The `neopulse` command: run (monolith), backtest (stored days), serve (one module), sim (Kotak simulator), db,
ctl (a running one).

Each subcommand lives in its own services/app/cmd_*.py with add_parser(subparsers).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("cmd_run", "cmd_backtest", "cmd_serve", "cmd_sim", "cmd_db", "cmd_ctl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neopulse", description="Algorithmic trading for Kotak Neo")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"services.app.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.app.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
