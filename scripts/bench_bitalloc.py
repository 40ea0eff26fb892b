"""Benchmark of bit allocation: SDXL-sized integer programs (solve time, status).

    python scripts/bench_bitalloc.py [--seed 0] [--weight-bits 4] [--act-bits 6]
"""

import argparse

from quant.bitalloc.synthetic import sdxl_benchmark


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-bits", default="4")
    p.add_argument("--act-bits", default="6")
    args = p.parse_args()
    print("SDXL-sized programs: 794 layers with SDXL's real sizes, synthetic sensitivities")
    for name, result in sdxl_benchmark(args.seed, args.weight_bits, args.act_bits):
        print(f"[{name}] {result.summary()}")


if __name__ == "__main__":
    main()
