"""Regenerate ``configs/prompts/coco2017_val_first1024.txt`` from the COCO 2017 val captions.

    python scripts/bundle_coco_prompts.py captions_val2017.json \
        configs/prompts/coco2017_val_first1024.txt

Uses the library's reader (:func:`quant.calib.prompts.read_prompts`) with the original MixDQ's
order: the first caption of each image, images in order of their first appearance in
``annotations``, whitespace normalised, exact repeats dropped; the first 1,024 prompts.
"""

import argparse

from quant.calib.prompts import read_prompts
from quant.utils.io import write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captions", help="COCO caption JSON (captions_val2017.json)")
    parser.add_argument("out", help="text file to write, one prompt per line")
    parser.add_argument("--num-prompts", type=int, default=1024)
    args = parser.parse_args()
    prompts = read_prompts(args.captions, num_prompts=args.num_prompts, coco_order="annotations")
    write_text(args.out, "\n".join(prompts.prompts) + "\n")
    print(f"{prompts.summary()} -> {args.out}")


if __name__ == "__main__":
    main()
