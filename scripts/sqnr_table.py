"""UNet-output SQNR against full precision on a calibration set: W8A8 vs W4A8, BOS on and off.

    mixdq calibrate --model tiny --prompts coco_captions_val2017.json --num-prompts 32 --out calib
    python scripts/sqnr_table.py --model tiny --calib calib
"""

import argparse

from quant.calib import CalibrationData
from quant.measure import Setting, format_sqnr_table, sqnr_table
from quant.models import load_fp_pipeline


def main():
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--calib", required=True, help="folder written by `mixdq calibrate`")
    p.add_argument("--presets", nargs="+", default=["W8A8", "W4A8"])
    p.add_argument("--weight-scale", choices=["mse", "minmax"], default="mse")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default=None)
    args = p.parse_args()
    pipe = load_fp_pipeline(args.model, args.device)
    data = CalibrationData(args.calib)
    unet = pipe.unet
    settings = [Setting(preset, bos) for preset in args.presets for bos in (True, False)]
    rows = sqnr_table(unet, lambda: data.batches(args.batch_size, unet.device, unet.dtype),
                      settings, weight_scale=args.weight_scale)
    print(format_sqnr_table(rows))


if __name__ == "__main__":
    main()
