"""Weigh quantized checkpoints of a UNet with random weights (default: the real SDXL UNet).

    python scripts/checkpoint_size.py                 # SDXL, W4 and W8, ~8 GB of RAM, minutes
    python scripts/checkpoint_size.py --meta          # byte accounting only, from the shapes

Prints, per uniform weight width, the layers' fp16 weight bytes, the bytes of the packed
weights + scales in the written checkpoint, the predicted bytes and the checkpoint file size.
"""

import argparse
import tempfile
from importlib import resources

from quant.bitmap import BitMap
from quant.measure import format_size_table, measure_checkpoint_sizes, random_unet
from quant.report import planned_report
from quant.structure import quantizable_layers


def main():
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="UNet config.json (default: SDXL's)")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 8])
    p.add_argument("--meta", action="store_true", help="only the byte accounting, no weights")
    p.add_argument("--work-dir", default=None, help="where to write the checkpoints (temp)")
    args = p.parse_args()
    config = args.config or resources.files("quant.configs").joinpath("sdxl_unet.json")
    unet = random_unet(config, meta=args.meta)
    if args.meta:
        for bits in args.bits:
            print(planned_report(unet, BitMap.uniform(quantizable_layers(unet), bits, None))
                  .format() + "\n")
        return
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        print(format_size_table(measure_checkpoint_sizes(unet, args.bits, work)))


if __name__ == "__main__":
    main()
