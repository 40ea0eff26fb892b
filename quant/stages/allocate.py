"""The allocate stage: sensitivity table + budgets -> bit map (or the Pareto front)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..bitalloc import (AllocConfig, Budget, SensitivityTable, cost_range, read_protect_list,
                        sweep, write_front)
from ..bitalloc import allocate as solve
from ..bitalloc.pick import MIN_PROMPTS
from ..errors import MixDQError
from ..methods import DEFAULT_METHOD, fill_options, method_settings
from ..models.spec import ModelSpec
from ..options import Options


@dataclasses.dataclass(frozen=True)
class AllocateOptions(Options):
    """Settings of ``mixdq allocate`` (the keys are its long flags, ``-`` written ``_``).

    ``weight_candidates``/``act_candidates`` map a group to its bits, e.g.
    ``{content: [2, 4, 8]}``; ``config`` is an :class:`quant.bitalloc.AllocConfig` file that the
    other allocation settings override.

    ``method`` (``paper``/``plus``) and ``switches`` give the allocation settings that neither
    these options nor the ``config`` file set (:func:`quant.methods.fill_options`): ``mode``
    (``split``, the original's per-group programs over a grid of budget shares; ``joint``),
    ``content_metric``, ``weight_storage`` (``packed``: 2-bit weights counted at 2 bits, what a
    checkpoint stores), ``pick`` (split mode's final pick: ``images``, the original's, measured
    on images generated from the first ``pick_prompts`` (at least 4) calibration prompts against
    full precision, which needs the model and the calibration folder; ``predicted``: by the
    table's predicted loss). With ``sweep`` the pick is always the predicted one.
    """

    SECTION = "allocate"

    weight_bits: float | None = None
    weight_mb: float | None = None
    act_bits: float | None = None
    protect: str | None = None
    config: str | None = None
    mode: str | None = None
    content_metric: str | None = None
    normalize: str | None = None
    content_weight: float | None = None
    weight_candidates: dict[str, tuple[int, ...]] | None = None
    act_candidates: dict[str, tuple[int, ...]] | None = None
    sweep: bool = False
    points: int = 17
    method: str = DEFAULT_METHOD
    switches: tuple[str, ...] = ()
    weight_storage: str | None = None
    pick: str | None = None
    pick_prompts: int | None = None

    def check(self):
        try:
            method_settings(self.method, self.switches)
        except MixDQError as e:
            key = "switches" if "switch" in str(e) else "method"
            raise self.fail(key, str(e)) from None
        if self.weight_bits is not None and self.weight_mb is not None:
            raise self.fail("weight_mb", "give weight_bits or weight_mb, not both")
        if not self.sweep and (self.weight_bits, self.weight_mb, self.act_bits) == (None,) * 3:
            raise MixDQError(f"{self.SECTION}: give a budget: weight_bits (or weight_mb) "
                             f"and/or act_bits")
        for key in ("weight_candidates", "act_candidates"):
            unknown = sorted(set(getattr(self, key) or {}) - {"content", "quality"})
            if unknown:
                raise self.fail(key, f"unknown group {unknown[0]!r} (use content or quality)")
        self.positive("points")
        try:
            self.budgets()
            config = self.alloc_config()
        except MixDQError as e:
            raise MixDQError(f"{self.SECTION}: {e}") from None
        for key in ("mode", "content_metric", "weight_storage"):  # recorded as resolved
            if getattr(self, key) is None:
                object.__setattr__(self, key, getattr(config, key))
        fill_options(self, "allocate")
        self.choice("pick", ("images", "predicted"))
        if self.pick == "images" and self.pick_prompts < MIN_PROMPTS:
            raise self.fail("pick_prompts", f"a measured pick needs at least {MIN_PROMPTS} "
                                            f"prompts, got {self.pick_prompts}")

    @property
    def measured_pick(self) -> bool:
        """Whether the final pick generates images (split mode, ``pick: images``, no sweep)."""
        return self.mode == "split" and self.pick == "images" and not self.sweep

    def budgets(self) -> tuple[Budget | None, Budget | None]:
        weight = (Budget.bits(self.weight_bits) if self.weight_bits is not None
                  else Budget.megabytes(self.weight_mb) if self.weight_mb is not None else None)
        act = Budget.bits(self.act_bits) if self.act_bits is not None else None
        return weight, act

    def alloc_config(self) -> AllocConfig:
        """The method's settings, the config file's (if any) over them, these settings on top."""
        names = {f.name for f in dataclasses.fields(AllocConfig)}
        data = {k: v for k, v in method_settings(self.method, self.switches)["allocate"].items()
                if k in names}
        if self.config:
            data.update(AllocConfig.read(self.config))
        config = AllocConfig.from_dict(data)
        overrides = {k: getattr(self, k) for k in ("mode", "content_metric", "normalize",
                                                     "content_weight", "weight_storage")
                     if getattr(self, k) is not None}
        for key in ("weight_candidates", "act_candidates"):
            given = getattr(self, key)
            if given is not None:
                overrides[key] = dict(getattr(config, key),
                                      **{g: list(b) for g, b in given.items()})
        if overrides:
            config = AllocConfig.from_dict(dict(config.to_dict(), **overrides))
        return config


def allocate(options: AllocateOptions, sensitivity_csv: str | Path, out: str | Path, *,
             model: ModelSpec | None = None, calib: str | Path | None = None,
             log: Callable[[str], None] = print):
    """Write the bit map ``out`` (.json/.yaml), or with ``sweep`` the front ``out`` (.csv + .png).

    ``model`` and ``calib`` (the calibration folder of the sensitivity table) are needed for
    the measured pick (``options.measured_pick``: split mode with ``pick: images``, the
    ``paper`` method's); otherwise they are not used.

    Returns:
        The :class:`quant.bitalloc.Allocation`, or with ``sweep`` the fronts per target.
    """
    config = options.alloc_config()
    out = Path(out)
    if options.sweep and out.suffix.lower() != ".csv":
        raise MixDQError(f"--out {out}: with --sweep, give a .csv file name")
    if not options.sweep and out.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise MixDQError(f"--out {out}: use a .json or .yaml file name for the bit map")
    _refuse_overwriting_inputs(out, options, sensitivity_csv)
    table = SensitivityTable.read(sensitivity_csv)
    if model is not None:
        table.check_layers(model.unet_layers(), source=f"sensitivity table {sensitivity_csv}")
    protected = read_protect_list(options.protect, table.layers) if options.protect else []

    if options.sweep:
        fronts = {t: sweep(table, t, config, protected, options.points) for t in table.targets}
        png = write_front(out, fronts)
        for target, results in fronts.items():
            lo, hi = results[0], results[-1]
            log(f"{target}: {len(results)} budgets, {lo.avg_bits:.3f} -> {hi.avg_bits:.3f} "
                f"average bits, predicted SQNR {lo.prediction.sqnr_db:.2f} -> "
                f"{hi.prediction.sqnr_db:.2f} dB, "
                f"{sum(r.solve_s for r in results):.2f} s in the solver")
        log(f"wrote {out} and {png}")
        return fronts

    weight, act = options.budgets()
    score = None
    if options.measured_pick:
        if model is None or calib is None:
            raise MixDQError("allocate: the measured pick (pick: images, the paper method's) "
                             "generates images: give the model and the calibration folder "
                             "(--model, --calib), or pick: predicted (--pick predicted)")
        score = _LazyScore(lambda: _image_score(options, model, calib, log))
    result = solve(table, weight, act, config, protected, score)
    for target, r in (("weight", result.weight), ("act", result.act)):
        if r is None:
            flag = "--weight-bits/--weight-mb" if target == "weight" else "--act-bits"
            log(f"{target}: not allocated (no {flag}): every {target} stays floating point")
            continue
        log(r.summary())
        widest = cost_range(table, r.target, config, protected)[1]
        if r.budget.capacity(r.total_size) > widest:
            log(f"note: the {r.target} budget {r.budget} is above the widest allocation "
                f"({widest / r.total_size:.4f} average bits): every layer has its most bits")
    result.bit_map.save(out)
    log(f"wrote {out} ({len(result.bit_map)} layers, {len(protected)} activations kept in "
        f"floating point)")
    return result


def _refuse_overwriting_inputs(out: Path, options: AllocateOptions, sensitivity_csv) -> None:
    """``--out`` (and, with ``sweep``, the plot written beside it) must not be an input file."""
    written = [out] + ([out.with_suffix(".png")] if options.sweep else [])
    inputs = {"--sensitivity": sensitivity_csv, "--protect": options.protect,
              "--config": options.config}
    for flag, given in inputs.items():
        if given is None:
            continue
        for target in written:
            if target.resolve() == Path(given).resolve():
                raise MixDQError(f"--out {out}: would overwrite the {flag} input {given}; "
                                 f"give another file name")


class _LazyScore:
    """A score built at its first use: an infeasible budget fails before any image is made."""

    def __init__(self, build: Callable):
        self._build, self._score = build, None

    def _get(self):
        if self._score is None:
            self._score = self._build()
        return self._score

    def __call__(self, target, bits):
        return self._get()(target, bits)

    def with_weights(self, weight_bits):
        return self._get().with_weights(weight_bits)


def _image_score(options: AllocateOptions, model: ModelSpec | None, calib, log):
    """The measured pick: images of the first ``pick_prompts`` calibration prompts."""
    from ..bitalloc.pick import ImageScore
    from ..calib.store import CalibrationData

    data = CalibrationData(calib)
    if len(data.prompts) < options.pick_prompts:
        raise MixDQError(f"allocate.pick_prompts: {options.pick_prompts} prompts asked for, the "
                         f"calibration {calib} has {len(data.prompts)}")
    quant = method_settings(options.method, options.switches)["quantize"]
    pipe = model.load()
    kwargs = data.generate_kwargs()
    seed = kwargs.pop("seed")
    batches = list(data.batches(8, device=pipe.unet.device, dtype=pipe.unet.dtype))
    log(f"measured pick: images of {options.pick_prompts} calibration prompts vs full "
        f"precision (MSE and SSIM) for each candidate share")
    return ImageScore(pipe, data.prompts[:options.pick_prompts], batches, seed=seed,
                      generate_kwargs=kwargs, weight_scale=quant["weight_scale"],
                      conv1_split=quant["conv1_split"])
