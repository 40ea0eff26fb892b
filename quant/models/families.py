"""Pipeline families: which diffusers pipeline a model folder holds, and how it is usually run.

A folder's ``model_index.json`` names its pipeline class (``_class_name``). The families mixdq
knows - their classes, the UNet they carry and their usual few-step settings - are in
:data:`FAMILIES`. Any other pipeline whose UNet is a ``UNet2DConditionModel`` and whose call
takes the stock text-to-image arguments is accepted as ``generic`` (nothing is assumed about its
conditioning: calibration records whatever the pipeline passes to its UNet). Anything else is
refused with one line naming the class.

LoRAs that only work with a particular scheduler (LCM-LoRA, SDXL-Lightning) switch the
pipeline's scheduler when they are fused, as their model cards prescribe
(:func:`scheduler_for_lora`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

from ..errors import MixDQError

# Arguments ``quant.generate.generate`` passes to every pipeline.
CALL_ARGS = ("prompt", "num_inference_steps", "guidance_scale", "height", "width", "generator",
             "output_type")


@dataclasses.dataclass(frozen=True)
class Defaults:
    """How a family is usually run: denoising steps, guidance scale, image side in pixels."""

    steps: int
    guidance: float
    resolution: int


@dataclasses.dataclass(frozen=True)
class Family:
    """A pipeline family mixdq knows.

    Attributes:
        name: short name (``sdxl``, ``sd``, ``generic``).
        pipeline: the diffusers pipeline class name in ``model_index.json``.
        text_encoders: how many text encoders feed the UNet's cross-attention.
        added_conditions: whether the UNet takes ``added_cond_kwargs`` (SDXL's pooled text and
            size conditions).
    """

    name: str
    pipeline: str
    text_encoders: int
    added_conditions: bool


FAMILIES = {
    "StableDiffusionXLPipeline": Family("sdxl", "StableDiffusionXLPipeline", 2, True),
    "StableDiffusionPipeline": Family("sd", "StableDiffusionPipeline", 1, False),
}

# Usual settings by (family, scheduler class): the distilled models' model cards.
_DEFAULTS = {
    ("sdxl", "EulerAncestralDiscreteScheduler"): (1, 0.0),  # SDXL-Turbo
    ("sdxl", "EulerDiscreteScheduler"): (4, 0.0),  # SDXL-Lightning / Hyper-SD (trailing)
    ("sdxl", "LCMScheduler"): (4, 1.0),  # LCM-LoRA SDXL
    ("sd", "EulerAncestralDiscreteScheduler"): (1, 0.0),  # SD-Turbo
    ("sd", "LCMScheduler"): (4, 1.0),  # SD 1.5 + LCM-LoRA
}
_BASE_DEFAULTS = (25, 7.5)  # an undistilled model: many steps, guided

# LoRAs that need a given scheduler: (substring of the LoRA's name, scheduler, its options).
LORA_SCHEDULERS = (
    ("lcm-lora", "LCMScheduler", {}),
    ("sdxl-lightning", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("hyper-sd", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
)


def read_model_index(source: str) -> dict:
    """``model_index.json`` of a local folder or a Hub id (from the cache, else downloaded).

    Raises:
        MixDQError: no readable ``model_index.json``.
    """
    path = Path(source) / "model_index.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, "model_index.json"))
        except Exception as e:  # noqa: BLE001  offline, unknown repo, no file: one line anyway
            raise MixDQError(f"--model {source}: cannot read its model_index.json "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise MixDQError(f"--model {source}: model_index.json is unreadable") from None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise MixDQError(f"--model {source}: model_index.json names no pipeline class")
    return index


def detect(index: dict, source: str = "the model") -> tuple[Family, type]:
    """The family and the diffusers pipeline class of a ``model_index.json``.

    Raises:
        MixDQError: naming the class, when it is not a diffusers pipeline mixdq can drive.
    """
    import diffusers

    name = index["_class_name"]
    family = FAMILIES.get(name)
    cls = getattr(diffusers, name, None)
    supported = ", ".join(FAMILIES)
    if cls is None:
        raise MixDQError(f"--model {source}: pipeline class {name} is not in this diffusers "
                         f"version; mixdq supports {supported} and other UNet2DConditionModel "
                         f"text-to-image pipelines")
    if family is not None:
        return family, cls
    unet = index.get("unet")
    if not (isinstance(unet, list) and unet[-1:] == ["UNet2DConditionModel"]):
        raise MixDQError(f"--model {source}: pipeline class {name} is not supported: its "
                         f"denoiser is {unet[-1] if isinstance(unet, list) else 'missing'}, "
                         f"not a UNet2DConditionModel (supported: {supported}, or another "
                         f"UNet2DConditionModel text-to-image pipeline)")
    params = inspect.signature(cls.__call__).parameters
    missing = [a for a in CALL_ARGS if a not in params]
    if missing:
        raise MixDQError(f"--model {source}: pipeline class {name} is not supported: its call "
                         f"lacks {', '.join(missing)} (supported: {supported})")
    encoders = sum(1 for k in index if k.startswith("text_encoder"))
    return Family("generic", name, encoders, False), cls


def family_of(pipe) -> Family:
    """The family of a loaded pipeline."""
    name = type(pipe).__name__
    if name in FAMILIES:
        return FAMILIES[name]
    encoders = sum(1 for k in ("text_encoder", "text_encoder_2", "text_encoder_3")
                   if getattr(pipe, k, None) is not None)
    return Family("generic", name, encoders, False)


def defaults(pipe) -> Defaults:
    """The usual steps, guidance and resolution of a loaded pipeline (family and scheduler)."""
    from ..generate import default_resolution

    key = (family_of(pipe).name, type(pipe.scheduler).__name__)
    steps, guidance = _DEFAULTS.get(key, _BASE_DEFAULTS)
    return Defaults(steps, guidance, default_resolution(pipe))


def usual_settings(index: dict, lora: str | None = None,
                   scheduler: str | None = None) -> tuple[int, float]:
    """The usual ``(steps, guidance)`` of a model from its ``model_index.json`` alone.

    The scheduler in force is ``scheduler`` when given, else the one the LoRA switches to
    (:func:`scheduler_for_lora`), else the folder's; no weights are loaded. The same table as
    :func:`defaults`.
    """
    name = scheduler
    if name is None and lora is not None and scheduler_for_lora(lora) is not None:
        name = scheduler_for_lora(lora)[0]
    if name is None:
        entry = index.get("scheduler")
        name = entry[-1] if isinstance(entry, list) and entry else None
    family = FAMILIES.get(index.get("_class_name"))
    return _DEFAULTS.get((family.name if family else "generic", name), _BASE_DEFAULTS)


def scheduler_for_lora(lora: str) -> tuple[str, dict] | None:
    """The scheduler (class name, config overrides) a LoRA needs, from its name; else None."""
    low = str(lora).lower()
    for key, name, options in LORA_SCHEDULERS:
        if key in low:
            return name, dict(options)
    return None


def set_scheduler(pipe, name: str, **options) -> None:
    """Replace ``pipe.scheduler`` with diffusers' ``name``, built from the current config.

    Raises:
        MixDQError: ``name`` is not a diffusers scheduler.
    """
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config") or "Scheduler" not in name:
        raise MixDQError(f"scheduler {name} is not a diffusers scheduler")
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **options)
