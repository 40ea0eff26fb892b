"""``python -m quant.sensitivity ARGS`` = ``mixdq sensitivity ARGS`` (works under torchrun)."""

import sys

from quant.cli import main

raise SystemExit(main(["sensitivity", *sys.argv[1:]]))
