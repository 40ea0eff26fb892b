""":class:`ModelSpec`: which model every stage loads, and how (device, dtype, LoRA)."""

from __future__ import annotations

import dataclasses

from ..errors import MixDQError

DEFAULT_MODEL = "stabilityai/sdxl-turbo"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The full-precision model a stage works on; the one place that loads a pipeline.

    Attributes:
        model: Hugging Face Hub id, local diffusers folder, ``"tiny"``, ``"proxy"`` or a tiny
            build of another family (``tiny-sd15``, ``tiny-sd21``, ``tiny-sdxl``); the pipeline
            class is the one the folder's ``model_index.json`` names
            (:mod:`quant.models.families`).
        device: ``"cpu"``, ``"cuda[:N]"``; ``None``: CUDA when present.
        dtype: compute dtype request (``fp16``/``bf16``/``fp32``, see :mod:`quant.precision`).
        lora: a LoRA (file, folder or Hub id) fused into the weights before anything else.
        lora_scale: strength of the fused LoRA.
        scheduler: a diffusers scheduler class name (``LCMScheduler``, ``EulerDiscreteScheduler``)
            replacing the pipeline's, built from its config; ``None``: the folder's, or the one
            the LoRA needs (LCM-LoRA, SDXL-Lightning).
    """

    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    scheduler: str | None = None

    def __post_init__(self):
        for key in ("model", "device", "dtype", "lora", "scheduler"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise MixDQError(f"model.{key}: expected a string, got {value!r}")
        if not self.model:
            raise MixDQError("model.model: empty model name")
        if self.scheduler is not None and not (self.scheduler.isidentifier()
                                               and self.scheduler.endswith("Scheduler")):
            raise MixDQError(f"model.scheduler: {self.scheduler!r} is not a diffusers scheduler "
                             f"class name (e.g. LCMScheduler, EulerDiscreteScheduler)")
        if isinstance(self.lora_scale, bool) or not isinstance(self.lora_scale, (int, float)):
            raise MixDQError(f"model.lora_scale: expected a number, got {self.lora_scale!r}")
        object.__setattr__(self, "lora_scale", float(self.lora_scale))
        if self.device is not None:
            check_device(self.device)

    def load(self, device=None, **kwargs):
        """The full-precision pipeline (LoRA fused); ``device`` overrides the spec's (a rank's
        GPU under torchrun). Other keywords go to :func:`quant.models.load_fp_pipeline`."""
        from .loading import load_fp_pipeline

        return load_fp_pipeline(self.model, device if device is not None else self.device,
                                self.dtype, lora=self.lora, lora_scale=self.lora_scale,
                                scheduler=self.scheduler, **kwargs)

    def usual_settings(self) -> tuple[int, float]:
        """The model's usual ``(steps, guidance)`` (its family and scheduler, LoRA and
        ``scheduler`` override included), read from ``model_index.json`` without loading it:
        what a stage uses when ``steps``/``guidance`` are not given."""
        from .families import read_model_index, usual_settings
        from .loading import resolve_model

        return usual_settings(read_model_index(resolve_model(self.model)), self.lora,
                              self.scheduler)

    def unet_layers(self) -> list[str]:
        """The names of the UNet's quantizable layers, from its configuration alone (the UNet is
        built on the meta device: no weights are read, even for SDXL)."""
        from diffusers import UNet2DConditionModel

        from ..structure import quantizable_layers
        from ..unet import random_unet
        from .loading import resolve_model

        config = UNet2DConditionModel.load_config(resolve_model(self.model), subfolder="unet")
        return list(quantizable_layers(random_unet(config, meta=True)))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        if data["scheduler"] is None:  # as before the setting existed: old run records match
            del data["scheduler"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        if not isinstance(data, dict):
            raise MixDQError(f"model: expected a mapping, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise MixDQError(f"model.{key}: unknown setting; known: {', '.join(names)}")
        return cls(**data)


def check_device(device: str) -> None:
    """Refuse a device that this torch cannot run on, with one line: an unknown name
    (``tpu``), CUDA on a CPU-only torch or a machine without a GPU, a GPU index that is not
    there.

    Raises:
        MixDQError: naming the device and what is available.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise MixDQError(f"model.device: unknown device {device!r}; use cpu, cuda or cuda:N"
                         ) from None
    if parsed.type == "cpu":
        return
    if parsed.type != "cuda":
        raise MixDQError(f"model.device: {device!r} is not supported by mixdq; use cpu, cuda or "
                         f"cuda:N")
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise MixDQError(f"model.device: {device!r} requested but {why}; use --device cpu")
    count = torch.cuda.device_count()
    if parsed.index is not None and parsed.index >= count:
        raise MixDQError(f"model.device: {device!r} requested but only {count} CUDA GPU(s) "
                         f"are visible (cuda:0..cuda:{count - 1})")
