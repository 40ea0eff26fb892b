"""The benchmark stage: full precision vs quantized checkpoints (quality, latency, memory)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Callable, Mapping

from ..errors import MixDQError
from ..methods import DEFAULT_METHOD, fill_options
from ..models.spec import ModelSpec
from ..options import Options, check_generation

EXECUTIONS = ("auto", "kernels", "simulate")


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions(Options):
    """Settings of ``mixdq benchmark`` (the keys are its long flags, ``-`` written ``_``).

    Prompts come from ``prompts`` (a source, see :func:`quant.calib.read_prompts`) or the inline
    ``prompt`` list. ``steps``/``guidance`` ``None``: the model's usual ones
    (:meth:`ModelSpec.usual_settings`).
    """

    SECTION = "benchmark"

    prompts: str | None = None
    prompt: tuple[str, ...] = ()
    num_prompts: int | None = None
    column: str = "text"
    split: str | None = None
    shuffle: bool = False
    shuffle_seed: int = 0
    real_images: str | None = None
    execution: str = "auto"
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    resolution: int | None = None
    seed: int = 42
    batch_size: int = 1
    inception: str | None = None
    no_fid: bool = False
    clip: str | None = None
    no_clip: bool = False
    no_image_reward: bool = False
    metric_batch_size: int = 32
    grid_rows: int = 8
    no_latency: bool = False
    latency_repeats: int = 10
    latency_warmup: int = 3
    cuda_graphs: bool = False
    method: str = DEFAULT_METHOD
    switches: tuple[str, ...] = ()
    coco_order: str | None = None

    def check(self):
        fill_options(self, "benchmark")
        self.choice("coco_order", ("annotations", "images"))
        if self.prompts and self.prompt:
            raise MixDQError(f"{self.SECTION}: give either prompts SOURCE or prompt TEXT, "
                             f"not both")
        if not self.prompts and not self.prompt:
            raise MixDQError(f"{self.SECTION}: no prompts: give prompts SOURCE or prompt TEXT")
        self.choice("execution", EXECUTIONS)
        self.positive("num_prompts", "steps", "resolution", "batch_size", "metric_batch_size",
                      "grid_rows", "latency_repeats")
        check_generation(self)
        if self.latency_warmup < 0:
            raise self.fail("latency_warmup", f"must be >= 0, got {self.latency_warmup}")

    def read_prompts(self) -> tuple[list[str], str]:
        """The prompts and a line saying where they came from."""
        from ..bench.generation import select_prompts
        from ..calib.prompts import read_prompts

        if self.prompt:
            prompts = select_prompts(list(self.prompt), self.num_prompts, "--prompt")
            if self.shuffle:  # a seeded sample of the whole list, as read_prompts does
                prompts = random.Random(self.shuffle_seed).sample(list(self.prompt),
                                                                  len(prompts))
            return prompts, f"{len(prompts)} prompts from --prompt"
        prompt_set = read_prompts(self.prompts, num_prompts=self.num_prompts,
                                  column=self.column, shuffle=self.shuffle,
                                  seed=self.shuffle_seed, split=self.split,
                                  coco_order=self.coco_order)
        return prompt_set.prompts, prompt_set.summary()

    def bench_config(self, out: str | Path, device: str | None,
                     usual: tuple[int, float] = (1, 0.0)):
        """The benchmark's configuration; ``usual``: the model's ``(steps, guidance)``, used
        where ``steps``/``guidance`` are not given."""
        from ..bench import BenchmarkConfig, GenerationSettings

        steps = usual[0] if self.steps is None else self.steps
        guidance = usual[1] if self.guidance is None else self.guidance
        return BenchmarkConfig(
            out_dir=str(out),
            generation=GenerationSettings(steps=steps, guidance=guidance,
                                          negative_prompt=self.negative_prompt,
                                          resolution=self.resolution, seed=self.seed,
                                          batch_size=self.batch_size),
            real_images=self.real_images, fid=not self.no_fid, inception=self.inception,
            clip=not self.no_clip, clip_model=self.clip, image_reward=not self.no_image_reward,
            latency=not self.no_latency, latency_repeats=self.latency_repeats,
            latency_warmup=self.latency_warmup, cuda_graphs=self.cuda_graphs,
            metric_batch_size=self.metric_batch_size, grid_rows=self.grid_rows, device=device)


def benchmark(model: ModelSpec, options: BenchmarkOptions,
              quantized: Mapping[str | None, str | Path] | list, out: str | Path, *,
              log: Callable[[str], None] = print) -> dict | None:
    """Compare the full-precision pipeline with every quantized checkpoint; write the report.

    Args:
        model: the float model the checkpoints were made from (its LoRA fused in every variant).
        options: the settings.
        quantized: ``{name: checkpoint folder}``, or a list of ``(name, folder)`` pairs (a
            ``None`` name: the folder's name).
        out: report folder (``report.json``, ``report.md``, ``grid.png``, ``images/``).

    Returns:
        The report, or ``None`` on torchrun ranks other than 0.
    """
    from ..bench import fp_variant, quantized_variant, run_benchmark
    from ..bench.report import markdown
    from ..utils.distributed import Distributed

    pairs = list(quantized.items()) if isinstance(quantized, Mapping) else list(quantized)
    prompts, source = options.read_prompts()
    usual = (options.steps, options.guidance)
    if None in usual:
        usual = model.usual_settings()
    config = options.bench_config(out, model.device, usual)
    with Distributed(model.device) as dist:  # under torchrun: this rank's GPU, its share
        device = str(dist.device)
        lora = dict(lora=model.lora, lora_scale=model.lora_scale, scheduler=model.scheduler)
        variants = [fp_variant(model.model, device, model.dtype, **lora)]
        for name, folder in pairs:
            variants.append(quantized_variant(model.model, folder, device, model.dtype,
                                              name=name, execution=options.execution, **lora))
        report = run_benchmark(variants, prompts, config, shard=dist.place,
                               prompts_source=source)
    if report is not None:
        log(markdown(report).rstrip("\n"))
        log(f"wrote {out}/report.json, report.md, grid.png")
    return report
