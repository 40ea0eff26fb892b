"""Measure the shipped proxy in full precision and draw its captioned grid.

    python scripts/proxy_report.py --grid docs/proxy_grid.png --json /tmp/proxy_report.json
"""

import argparse
import json

import torch

from quant.models import load_fp_pipeline
from quant.proxy.classifier import AttributeClassifier
from quant.proxy.metrics import eval_captions
from quant.proxy.model import bos_outlier_ratio, classifier_file
from quant.proxy.report import fp_report, save_fp_grid
from quant.utils.io import write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="proxy")
    p.add_argument("--grid", default=None, help="PNG of 24 captioned one-step images")
    p.add_argument("--json", default=None, help="write the numbers here too")
    p.add_argument("--repeats", type=int, default=8, help="images per caption")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_fp_pipeline(args.model, device="cpu")
    classifier = AttributeClassifier.load(classifier_file())
    report = fp_report(pipe, classifier, repeats=args.repeats)
    with torch.no_grad():
        embeds = pipe.encode_prompt(eval_captions("all", 1), device="cpu",
                                    num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    report["bos_ratio"] = bos_outlier_ratio(embeds)
    report["bos_peak"] = float(embeds[:, 0].abs().max())
    report["token_peak_median"] = float(embeds[:, 1:].abs().amax(-1).median())
    if args.grid:
        report["grid_content_acc"] = save_fp_grid(pipe, classifier, args.grid)
    for key, row in report.items():
        if isinstance(row, dict):
            print(f"{key:16s} content {row['content_acc']:.3f}  fid {row['fid']:8.2f}  " +
                  "  ".join(f"{k[:-4]} {v:.3f}" for k, v in row.items()
                            if k.endswith("_acc") and k != "content_acc"))
    if args.json:
        write_json(args.json, report)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}))


if __name__ == "__main__":
    main()
