"""Convert the original MixDQ's YAML sensitivity tables into a mixdq sensitivity CSV.

    python scripts/convert_mixdq_tables.py DIR OUT.csv [--weight-total N] [--act-total N]

DIR holds ``weight_sqnr.yaml``, ``weight_ssim.yaml``, ``act_sqnr.yaml``, ``act_ssim.yaml`` and the
size ratios ``weight_size_ratio.yaml`` / ``act_size_ratio.yaml`` (``model.<layer>: [m@2, m@4,
m@8]``; see :mod:`quant.sensitivity.mixdq_tables`). The CSV feeds ``mixdq allocate
--sensitivity OUT.csv``; a protect list (the original's rule, per group at A8) is written beside
it as ``OUT.protect.txt``.
"""

from __future__ import annotations

import argparse
import sys

from quant.errors import MixDQError
from quant.sensitivity.mixdq_tables import read_mixdq_tables
from quant.sensitivity.results import format_protect, protect_list, write_csv
from quant.utils.io import write_text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("out", help="the sensitivity CSV to write")
    p.add_argument("--weight-total", type=int, help="total parameters the ratios are shares of")
    p.add_argument("--act-total", type=int, help="total activation elements (per sample)")
    args = p.parse_args(argv)
    try:
        if not args.out.endswith(".csv"):
            raise MixDQError(f"{args.out}: the sensitivity table must be a .csv file")
        rows, layers = read_mixdq_tables(args.folder, weight_total=args.weight_total,
                                         act_total=args.act_total)
        write_csv(args.out, rows, layers)
        protect = protect_list(rows)
        write_text(args.out[:-4] + ".protect.txt", format_protect(protect, rows, 0.01))
    except MixDQError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(layers)} layers, {len(rows)} rows; "
          f"{len(protect)} activation layers in {args.out[:-4]}.protect.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
