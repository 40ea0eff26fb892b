"""The quantize stage: calibrate a UNet's activation ranges and write a quantized checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..bitmap import BitMap, check_bits
from ..calib.ranges import REDUCTIONS, resolve_reduction
from ..errors import MixDQError
from ..methods import DEFAULT_METHOD, fill_options
from ..models.spec import ModelSpec
from ..options import Options


@dataclasses.dataclass(frozen=True)
class QuantizeOptions(Options):
    """Settings of ``mixdq quantize`` (the keys are its long flags, ``-`` written ``_``).

    Give ``bit_map`` (a file from the allocate stage) or uniform ``w_bits``/``a_bits``
    (``None``: that side stays floating point). ``range_reduction``: how activation ranges
    are reduced over the calibration batches (:mod:`quant.calib.ranges`; ``auto``: the
    original's EMA for one step, running min/max for several). ``timestep_ranges``: one
    activation range per calibrated denoising step, chosen by each UNet call's timestep
    (:mod:`quant.steps`; multi-step calibrations only; the checkpoint then runs simulated).

    ``method`` (``paper``/``plus``) and ``switches`` fill the settings left ``None``
    (:func:`quant.methods.fill_options`): ``weight_scale`` (``minmax``, the original's, or
    ``mse``) and ``conv1_split`` (``false``, the original's: only the up-block ``conv_shortcut``
    splits its ``concat(hidden, skip)`` input, with one activation and one weight scale per
    slice; ``true`` also gives the resnets' ``conv1`` per-slice activation quantizers).
    """

    SECTION = "quantize"

    bit_map: str | None = None
    w_bits: int | None = None
    a_bits: int | None = None
    no_bos: bool = False
    weight_scale: str | None = None
    momentum: float = 0.95
    range_reduction: str = "auto"
    timestep_ranges: bool = False
    batch_size: int = 4
    no_progress: bool = False
    method: str = DEFAULT_METHOD
    switches: tuple[str, ...] = ()
    conv1_split: bool | None = None

    def check(self):
        fill_options(self, "quantize")
        uniform = self.w_bits is not None or self.a_bits is not None
        if self.bit_map and uniform:
            raise MixDQError(f"{self.SECTION}: give either bit_map or w_bits/a_bits, not both")
        if not self.bit_map and not uniform:
            raise MixDQError(f"{self.SECTION}: give bit_map FILE, or w_bits B and a_bits B")
        for key, what in (("w_bits", "weight"), ("a_bits", "activation")):
            try:
                check_bits(getattr(self, key), what)
            except MixDQError as e:
                raise self.fail(key, str(e)) from None
        self.choice("weight_scale", ("mse", "minmax"))
        self.choice("range_reduction", REDUCTIONS)
        self.positive("batch_size")
        if not 0 <= self.momentum <= 1:
            raise self.fail("momentum", f"must be in [0, 1], got {self.momentum}")


def stage_settings(model: ModelSpec, options: QuantizeOptions, data, bit_map: BitMap | None
                   ) -> dict:
    """What the checkpoint depends on, with no path in it: the model and LoRA, the compute
    dtype, the calibration (by its fingerprint), the bits (the bit map's content) and the
    calibration options. Recorded as ``settings`` in ``quant_config.json``."""
    from ..precision import default_device, resolve_dtype
    from ..utils.records import json_digest

    device = model.device or default_device()
    dtype = str(resolve_dtype(device, model.dtype)).removeprefix("torch.")
    bits = ({"bit_map_sha256": json_digest(bit_map.to_dict())} if bit_map is not None
            else {"w_bits": options.w_bits, "a_bits": options.a_bits})
    return {"model": model.model, "lora": model.lora, "lora_scale": model.lora_scale,
            "dtype": dtype, "calibration": data.fingerprint(), **bits,
            "bos": not options.no_bos, "weight_scale": options.weight_scale,
            "momentum": options.momentum, "batch_size": options.batch_size,
            "range_reduction": options.range_reduction,
            "timestep_ranges": options.timestep_ranges, "conv1_split": options.conv1_split}


def quantize(model: ModelSpec, options: QuantizeOptions, calib: str | Path, out: str | Path, *,
             log: Callable[[str], None] = print) -> Path:
    """Quantize the model's UNet, calibrated on ``calib``, and write the checkpoint ``out``.

    A checkpoint already at ``out`` with the same settings (:func:`stage_settings`) whose files
    verify is kept and nothing is computed; one with other settings is refused before anything
    is loaded, naming the first difference.

    Returns:
        The checkpoint folder (``quant.load_pipeline(model, quantized=out)`` loads it).
    """
    from ..calib import CalibrationData
    from ..checkpoint import finished_checkpoint, save_quantized
    from ..multistep import step_sqnr
    from ..quantize import quantize_unet
    from ..report import quantization_report
    from ..structure import quantizable_layers
    from ..utils.sizes import UNIT, format_mb, fp16_bytes, percent_of, weight_bytes

    data = CalibrationData(calib)
    bit_map = BitMap.load(options.bit_map) if options.bit_map else None
    settings = stage_settings(model, options, data, bit_map)
    if finished_checkpoint(out, settings):
        log(f"{out} already holds this checkpoint (same settings, files verified); "
            f"nothing to do")
        return Path(out)
    unet = model.load().unet
    baseline = fp16_bytes(unet)  # before quantization: the UNet's own parameters as fp16
    if bit_map is None:
        bit_map = BitMap.uniform(quantizable_layers(unet), options.w_bits, options.a_bits)

    def batches():
        return data.batches(options.batch_size, device=unet.device, dtype=unet.dtype)

    quantize_unet(unet, bit_map, batches(), bos=not options.no_bos,
                  weight_scale=options.weight_scale, momentum=options.momentum,
                  conv1_split=options.conv1_split, range_reduction=options.range_reduction,
                  timestep_ranges=options.timestep_ranges, progress=not options.no_progress)
    sqnr, per_step = step_sqnr(unet, data, options.batch_size)
    reduction = resolve_reduction(options.range_reduction, data.steps)
    meta = {"settings": settings, "calibration_samples": len(data),
            "bos": not options.no_bos, "weight_scale": options.weight_scale,
            "method": options.method, "switches": list(options.switches),
            "conv1_split": options.conv1_split,
            "momentum": options.momentum, "range_reduction": reduction,
            "timestep_ranges": options.timestep_ranges and data.steps > 1,
            "sqnr_db": round(sqnr, 4)}
    if data.steps > 1:
        meta["sqnr_db_per_step"] = [round(v, 4) for v in per_step]
    path = save_quantized(unet, out, base_model=model.model, metadata=meta)
    log(quantization_report(unet).format())
    deployed = weight_bytes(unet)
    log(f"UNet weights as deployed: {format_mb(deployed)} {UNIT} "
        f"({percent_of(deployed, baseline)} of its {format_mb(baseline)} {UNIT} in fp16)")
    log(f"UNet output SQNR vs full precision on the calibration set: {sqnr:.2f} dB "
        f"(activation ranges: {reduction}"
        f"{', one per step' if options.timestep_ranges and data.steps > 1 else ''})")
    if data.steps > 1:
        log("  per step: " + ", ".join(f"step {s}: {v:.2f} dB" for s, v in enumerate(per_step)))
    log(f"wrote {path}")
    return path
