"""Measure each ``plus`` switch against ``paper`` (quant.methods), end to end, on a small model.

For every switch the same calibration prompts and the same held-out prompts are used; the
metrics are the held-out UNet-output SQNR (dB, over the recorded calls) and the held-out image
SSIM against the full-precision images (the original's near-global window at the model's
resolution). A switch "helps" when it raises the SQNR by more than 0.1 dB without lowering the
SSIM by more than 1e-4, or raises the SSIM by more than 1e-4 without lowering the SQNR by more
than 0.1 dB.

- ``mse_clipping``: uniform W4A8 and W3A8, min-max against MSE-searched weight scales.
- ``conv1_split``: uniform W8A4, the resnets' conv1 with and without split input quantizers.
- ``joint_objective``: a sensitivity table measured directly (one layer at a time; SQNR, and SSIM
  of content layers), W4-average weights (A8) from the split program with the measured pick
  (:class:`quant.bitalloc.pick.ImageScore`, 4 calibration prompts) against the joint program.
- ``fp16_sensitivity``: a speed switch; measured only on CUDA (on CPU it is reported as not
  measured and stays off).

Cheap: about 3 minutes on one CPU core for ``tiny``. Prints a markdown table (paste it into
``docs/METHODS.md``) and writes it to ``--out`` if given.

    python scripts/bench_methods.py --model tiny [--model proxy] [--out table.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from quant.bitalloc import AllocConfig, Budget, allocate
from quant.bitalloc.pick import ImageScore
from quant.bitmap import BitMap, LayerBits
from quant.quantize import output_sqnr, prepare, quantize_unet
from quant.structure import quantizable_layers

#: COCO-style captions for calibration (written for this check).
CALIB_PROMPTS = ["a person riding a horse on a beach", "a bowl of soup next to bread",
                 "a train arriving at a station", "a child flying a kite in a park",
                 "a vase of flowers on a window sill", "a cat sleeping on a laptop",
                 "an airplane flying over mountains", "a pizza with mushrooms and olives"]


def _bench_bitalloc():
    path = Path(__file__).resolve().parent / "bench_bitalloc.py"
    spec = importlib.util.spec_from_file_location("bench_bitalloc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Bench:
    """One model's calibration, held-out calls and reference images."""

    def __init__(self, model: str, prompts: int):
        from quant.stages import ModelSpec

        self.bb = _bench_bitalloc()
        self.model = model
        self.spec = ModelSpec(model, device="cpu")
        self.pipe = self.spec.load()
        self.prompts = CALIB_PROMPTS[:prompts]
        self._tmp = tempfile.TemporaryDirectory()  # the calibration, kept for the sensitivity
        self.tmp = Path(self._tmp.name)
        self.calib_dir = self.tmp / "calib"
        self.calib = self.bb.record(self.spec, self.prompts, self.calib_dir)
        self.held_out = self.bb.record(self.spec, self.bb.EVAL_PROMPTS, self.tmp / "eval")
        self.reference = self.bb.images(self.pipe, self.bb.EVAL_PROMPTS)
        self.names = list(quantizable_layers(self.pipe.unet))

    @torch.no_grad()
    def evaluate(self, bit_map: BitMap, **quant) -> dict:
        from quant.sensitivity.metrics import uniform_ssim

        unet = self.pipe.unet
        quantize_unet(unet, bit_map, self.calib, progress=False, **quant)
        sqnr = output_sqnr(unet, self.held_out)
        images = self.bb.images(self.pipe, self.bb.EVAL_PROMPTS)
        side = min(images.shape[-2:])
        window = side - 1 if side % 2 == 0 else side - 2
        ssim = float(uniform_ssim(images, self.reference, window).mean())
        prepare(unet, BitMap.uniform(self.names, None, None), **quant)
        return {"sqnr_db": sqnr, "ssim": ssim}


def helps(base: dict, new: dict) -> bool:
    d_sqnr, d_ssim = new["sqnr_db"] - base["sqnr_db"], new["ssim"] - base["ssim"]
    return (d_sqnr > 0.1 and d_ssim >= -1e-4) or (d_ssim > 1e-4 and d_sqnr >= -0.1)


SWITCH_NAMES = ("mse_clipping", "conv1_split", "joint_objective", "fp16_sensitivity")


def run(model: str, prompts: int, only=SWITCH_NAMES) -> list[tuple]:
    """Rows ``(model, switch, setting, paper metrics, switch metrics, helps)``."""
    bench = Bench(model, prompts)
    rows = []
    for w in (4, 3) if "mse_clipping" in only else ():
        bit_map = BitMap.uniform(bench.names, w, 8)
        base = bench.evaluate(bit_map, weight_scale="minmax")
        new = bench.evaluate(bit_map, weight_scale="mse")
        rows.append((model, "mse_clipping", f"uniform W{w}A8", base, new, helps(base, new)))
    if "conv1_split" in only:
        bit_map = BitMap.uniform(bench.names, 8, 4)
        base = bench.evaluate(bit_map, conv1_split=False)
        new = bench.evaluate(bit_map, conv1_split=True)
        rows.append((model, "conv1_split", "uniform W8A4", base, new, helps(base, new)))
    if "joint_objective" in only:
        rows.append(_joint(bench, model))
    if "fp16_sensitivity" in only:
        what = ("needs a GPU run of mixdq sensitivity" if torch.cuda.is_available()
                else "not measured (CPU only; speed switch)")
        rows.append((model, "fp16_sensitivity", what, None, None, False))
    return rows


def _joint(bench: Bench, model: str) -> tuple:
    table = bench.bb.measure_table(bench.spec, bench.calib_dir, bench.tmp / "sens.csv",
                                   measure_ssim=True)
    results = {}
    for mode in ("split", "joint"):
        config = AllocConfig(mode=mode, content_metric="ssim")
        score = ImageScore(bench.pipe, bench.prompts[:4], bench.calib) if mode == "split" \
            else None
        alloc = allocate(table, Budget.bits("4"), None, config, score=score)
        bit_map = BitMap({n: LayerBits(b.w, 8) for n, b in alloc.bit_map.layers.items()})
        results[mode] = dict(bench.evaluate(bit_map), bits=alloc.weight.avg_bits)
    setting = (f"W4 average A8 (split {results['split']['bits']:.3f} / joint "
               f"{results['joint']['bits']:.3f} bits)")
    return (model, "joint_objective", setting, results["split"], results["joint"],
            helps(results["split"], results["joint"]))


def markdown(rows) -> str:
    lines = ["| model | switch | setting | paper SQNR / SSIM | with switch SQNR / SSIM | helps |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, switch, setting, base, new, ok in rows:
        def fmt(m):
            return "-" if m is None else f"{m['sqnr_db']:.2f} dB / {m['ssim']:.4f}"
        lines.append(f"| {model} | `{switch}` | {setting} | {fmt(base)} | {fmt(new)} | "
                     f"{'yes' if ok else 'no'} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append",
                   help="tiny, proxy or a diffusers folder (repeatable; default tiny)")
    p.add_argument("--prompts", type=int, default=8, help="calibration prompts (4..8)")
    p.add_argument("--out", type=Path, help="also write the markdown table here")
    p.add_argument("--only", nargs="+", choices=SWITCH_NAMES, default=SWITCH_NAMES,
                   help="switches to measure (default all)")
    args = p.parse_args()
    torch.manual_seed(0)
    rows = []
    for model in args.model or ["tiny"]:
        start = time.perf_counter()
        rows += run(model, max(4, min(args.prompts, len(CALIB_PROMPTS))), args.only)
        print(f"{model}: {time.perf_counter() - start:.0f} s", flush=True)
    text = markdown(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
