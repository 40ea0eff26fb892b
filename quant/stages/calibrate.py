"""The calibrate stage: run the full-precision pipeline on prompts, record every UNet call."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from ..models.spec import ModelSpec
from ..options import Options, check_generation


@dataclasses.dataclass(frozen=True)
class CalibrateOptions(Options):
    """Settings of ``mixdq calibrate`` (the keys are its long flags, ``-`` written ``_``).

    ``steps``/``guidance`` ``None``: the model's usual ones (:meth:`ModelSpec.usual_settings`:
    1 step unguided for SDXL-Turbo/SD-Turbo, 4 steps for LCM and SDXL-Lightning).
    ``negative_prompt``: the unconditional prompt when ``guidance > 1`` doubles the batch.
    """

    SECTION = "calibrate"

    prompts: str
    num_prompts: int = 32
    column: str = "text"
    split: str | None = None
    shuffle: bool = False
    shuffle_seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    resolution: int | None = None
    batch_size: int = 8
    seed: int = 42
    no_progress: bool = False

    def check(self):
        self.positive("num_prompts", "steps", "resolution", "batch_size")
        check_generation(self)


def calibrate(model: ModelSpec, options: CalibrateOptions, out: str | Path, *,
              log: Callable[[str], None] = print) -> Path:
    """Record a calibration folder at ``out`` (resumable; a finished one is left as is).

    Returns:
        The folder, readable with :class:`quant.calib.CalibrationData`.
    """
    from ..calib.prompts import read_prompts
    from ..calib.record import finished_run, record_calibration
    from ..calib.store import CalibrationData

    prompt_set = read_prompts(options.prompts, num_prompts=options.num_prompts,
                              column=options.column, shuffle=options.shuffle,
                              seed=options.shuffle_seed, split=options.split)
    log(prompt_set.summary())
    steps, guidance = options.steps, options.guidance
    if steps is None or guidance is None:
        usual_steps, usual_guidance = model.usual_settings()
        steps = usual_steps if steps is None else steps
        guidance = usual_guidance if guidance is None else guidance
        log(f"{model.model}: {steps} step(s), guidance {guidance:g} (the model's usual)")
    settings = dict(steps=steps, guidance=guidance, negative_prompt=options.negative_prompt,
                    resolution=options.resolution, batch_size=options.batch_size,
                    seed=options.seed, model_name=model.model)
    if finished_run(out, prompt_set.prompts, **settings):
        log(f"{out} already holds this calibration; nothing to do")
        return Path(out)
    pipe = model.load()
    source = {**prompt_set.describe(), "column": options.column, "shuffle": options.shuffle,
              "shuffle_seed": options.shuffle_seed}
    path = record_calibration(pipe, prompt_set.prompts, out, progress=not options.no_progress,
                              source=source, **settings)
    data = CalibrationData(path)
    log(f"wrote {path}: {len(data.prompts)} prompts, {data.steps} step(s), {len(data)} samples")
    return path
