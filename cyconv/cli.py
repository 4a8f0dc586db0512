"""The ``cyconv`` command line (see ``cyconv --help``); each command lives in cyconv/commands."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import CyconvError

COMMANDS = ("run", "demo", "convert", "profile", "bench")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cyconv", description="Fast CPU inference for CNNs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cyconv.commands.{name}").add_parser(commands)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CyconvError, OSError, ValueError) as exc:
        print(f"cyconv {args.command}: error: {exc}", file=sys.stderr)
        return 2
