"""The ``mixdq`` command. Each subcommand lives in its own module with ``register`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MixDQError
from ..utils.quiet import quiet_libraries

SUBCOMMANDS = ["calibrate", "sensitivity", "allocate", "quantize", "generate", "benchmark", "run"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="mixdq", description="Mixed-precision post-training quantization for few-step "
        "text-to-image diffusion models (MixDQ).")
    parser.add_argument("--version", action="version", version=f"mixdq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.subcommands = {}
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = module.register(sub)
        p.set_defaults(func=module.run)
        parser.subcommands[name] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixdq`` console command. Returns the exit status."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's usage, not the top-level one (exits with status 2)
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with quiet_libraries():
            return int(args.func(args) or 0)
    except MixDQError as e:
        print(f"mixdq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mixdq {args.command}: interrupted (finished work is kept; rerun to resume)",
              file=sys.stderr)
        return 130
