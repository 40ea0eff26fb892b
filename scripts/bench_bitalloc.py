"""Benchmark of bit allocation.

1. SDXL-sized programs: 794 layers with SDXL's real sizes and synthetic sensitivities; prints the
   solve time and status of each program.
2. On the built-in ``tiny`` model: calibration and weight sensitivities from the calibrate and
   sensitivity stages (:mod:`quant.stages`: one layer at a time, UNet-output SQNR, SSIM of
   images for content layers with ``--ssim``), then W4A8-average bit maps from the joint and
   split programs against uniform W4A8 at the same weight bytes, measured end to end on
   held-out prompts (UNet-output SQNR, image SSIM).

    python scripts/bench_bitalloc.py [--skip-sdxl] [--skip-tiny] [--ssim] [--prompts 8]
                                     [--table runs/tiny_sens.csv]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from quant.bitalloc import AllocConfig, Budget, SensitivityTable, allocate
from quant.bitalloc.synthetic import sdxl_benchmark
from quant.bitmap import BitMap, LayerBits
from quant.quantize import output_sqnr, prepare, quantize_unet
from quant.stages import (CalibrateOptions, ModelSpec, SensitivityOptions, calibrate,
                          sensitivity)
from quant.structure import quantizable_layers

#: Held out from sensitivity and calibration; COCO-style captions written for this check.
EVAL_PROMPTS = ["a man riding a bicycle down a city street", "two dogs playing in the snow",
                "a plate of pasta with tomatoes and basil", "a red double decker bus",
                "a kitchen with a wooden table and chairs", "a boat on a calm lake at sunset",
                "a giraffe standing next to a tree", "a laptop on a desk beside a cup"]


def record(model: ModelSpec, prompts: list[str], folder: Path) -> list[dict]:
    """The calibrate stage on ``prompts``; its UNet calls as one list of batches."""
    from quant.calib import CalibrationData

    folder.mkdir(parents=True, exist_ok=True)
    source = folder.with_name(folder.name + "-prompts.txt")
    source.write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
    calibrate(model, CalibrateOptions(prompts=str(source), num_prompts=len(prompts),
                                      batch_size=len(prompts), no_progress=True), folder,
              log=lambda line: None)
    return list(CalibrationData(folder).batches(len(prompts)))


def images(pipe, prompts: list[str]) -> torch.Tensor:
    from quant.generate import generate

    return generate(pipe, prompts, seed=1000, output_type="pt").float().clamp(0, 1)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(a, b, data_range=1.0))


def measure_table(model: ModelSpec, calib_dir: Path, out: Path,
                  measure_ssim: bool = False) -> SensitivityTable:
    """The sensitivity stage, weights only: one layer quantized at a time, all else float,
    UNet-output SQNR (and, with ``measure_ssim``, content layers' image SSIM)."""
    options = SensitivityOptions(weight_bits=(2, 4, 8), act_bits=(), no_progress=True,
                                 ssim="content" if measure_ssim else "none")
    sensitivity(model, options, calib_dir, out, log=lambda line: None)
    return SensitivityTable.read(out)


@torch.no_grad()
def evaluate(pipe, bit_map: BitMap, calib: list[dict], held_out: list[dict],
             reference: torch.Tensor | None) -> dict:
    """Quantize with ``bit_map`` (ranges from ``calib``) and measure on held-out prompts."""
    quantize_unet(pipe.unet, bit_map, calib, progress=False)
    sizes = {n: m.weight.numel() for n, m in quantizable_layers(pipe.unet).items()}
    out = {"weight_mb": sum(sizes[n] * bit_map[n].w for n in sizes) / 8e6,
           "sqnr_db": output_sqnr(pipe.unet, held_out)}
    if reference is not None:
        out["ssim"] = ssim(images(pipe, EVAL_PROMPTS), reference)
    prepare(pipe.unet, BitMap.uniform(sizes, None, None))
    return out


def compare_on_tiny(model: ModelSpec, prompts: list[str], measure_ssim: bool = False,
                    weight_bits: str = "4", table_path: Path | None = None,
                    only: tuple[str, ...] | None = None
                    ) -> tuple[SensitivityTable, dict[str, dict]]:
    """Uniform W4A8 against allocated W4-average (A8) bit maps on the tiny pipeline.

    Args:
        model: the tiny model (float32, CPU).
        prompts: calibration prompts (sensitivity and activation ranges).
        measure_ssim: also measure content layers' image SSIM (slower), and use it.
        weight_bits: the weight budget in average bits.
        table_path: a CSV to reuse if it exists, or to save the measured table to.
        only: the allocation variants to run (default all: joint, "joint, normalize none",
            split, "split, pixel MSE").

    Returns:
        The measured table and, per variant, ``weight_mb``, ``sqnr_db`` (held-out UNet output)
        and ``ssim`` (held-out images, with ``measure_ssim``), plus the allocation's summary.
    """
    with tempfile.TemporaryDirectory() as tmp:
        calib = record(model, prompts, Path(tmp) / "calib")
        held_out = record(model, EVAL_PROMPTS, Path(tmp) / "eval")
        if table_path is not None and Path(table_path).is_file():
            table = SensitivityTable.read(table_path)
        else:
            table = measure_table(model, Path(tmp) / "calib", Path(tmp) / "sens.csv",
                                  measure_ssim)
            if table_path is not None:
                table.write(table_path)
    pipe = model.load()
    reference = images(pipe, EVAL_PROMPTS) if measure_ssim else None
    names = table.layers
    metric = "ssim" if measure_ssim else "sqnr"
    split = AllocConfig(content_metric=metric, mode="split")
    variants = {"joint": AllocConfig(content_metric=metric, mode="joint"),
                "joint, normalize none": AllocConfig(content_metric="sqnr", normalize="none",
                                                     mode="joint"),
                "split": split,
                "split, pixel MSE": split}  # the original's pick: pixel MSE of one image
    results = {f"uniform W{weight_bits}A8": evaluate(
        pipe, BitMap.uniform(names, int(weight_bits), 8), calib, held_out, reference)}
    for label, config in variants.items():
        if only is not None and label not in only:
            continue
        score = pixel_mse(pipe, calib, prompts[0]) if label == "split, pixel MSE" else None
        # Weights allocated; activations 8 bits everywhere, as in the uniform W4A8 map.
        alloc = allocate(table, Budget.bits(weight_bits), None, config, score=score)
        bit_map = BitMap({n: LayerBits(b.w, 8) for n, b in alloc.bit_map.layers.items()})
        results[label] = dict(evaluate(pipe, bit_map, calib, held_out, reference),
                              summary=alloc.weight.summary())
    return table, results


def pixel_mse(pipe, calib: list[dict], prompt: str):
    """A split-mode score for the weight program: MSE of one image against the float one (A8)."""
    reference = images(pipe, [prompt])

    @torch.no_grad()
    def score(target, bits):
        bit_map = BitMap({n: LayerBits(b, 8) for n, b in bits.items()})
        quantize_unet(pipe.unet, bit_map, calib, progress=False)
        error = float((images(pipe, [prompt]) - reference).square().mean())
        prepare(pipe.unet, BitMap.uniform(bits, None, None))
        return error

    return score


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-sdxl", action="store_true")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--ssim", action="store_true", help="also measure content layers' SSIM")
    p.add_argument("--prompts", type=int, default=8, help="calibration prompts (COCO)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", type=Path, help="tiny sensitivity CSV to reuse, or to write")
    args = p.parse_args()
    if not args.skip_sdxl:
        print("SDXL-sized programs: 794 layers, SDXL's real sizes, synthetic sensitivities")
        for name, result in sdxl_benchmark(args.seed):
            print(f"  [{name}] {result.summary()}")
    if not args.skip_tiny:
        from quant.calib import load_prompts

        coco = Path(__file__).resolve().parents[1] / "configs/prompts/coco2017_val_first1024.txt"
        prompts = load_prompts(str(coco), num_prompts=args.prompts)
        _, results = compare_on_tiny(ModelSpec("tiny", device="cpu"), prompts, args.ssim,
                                     table_path=args.table)
        print(f"tiny: {args.prompts} COCO calibration prompts, {len(EVAL_PROMPTS)} held out")
        for label, r in results.items():
            ssim_text = f", image SSIM {r['ssim']:.4f}" if "ssim" in r else ""
            print(f"  {label:24s} weight {r['weight_mb']:.4f} MB, UNet-output SQNR "
                  f"{r['sqnr_db']:.2f} dB{ssim_text}")
            if "summary" in r:
                print(f"  {'':24s} {r['summary']}")


if __name__ == "__main__":
    main()
