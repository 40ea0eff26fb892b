""":class:`ModelSpec`: which model every stage loads, and how (device, dtype, LoRA)."""

from __future__ import annotations

import dataclasses

from ..errors import MixDQError

DEFAULT_MODEL = "stabilityai/sdxl-turbo"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The full-precision model a stage works on; the one place that loads a pipeline.

    Attributes:
        model: Hugging Face Hub id, local diffusers folder, ``"tiny"`` or ``"proxy"``.
        device: ``"cpu"``, ``"cuda[:N]"``; ``None``: CUDA when present.
        dtype: compute dtype request (``fp16``/``bf16``/``fp32``, see :mod:`quant.precision`).
        lora: a LoRA (file, folder or Hub id) fused into the weights before anything else.
        lora_scale: strength of the fused LoRA.
    """

    model: str = DEFAULT_MODEL
    device: str | None = None
    dtype: str | None = None
    lora: str | None = None
    lora_scale: float = 1.0

    def __post_init__(self):
        for key in ("model", "device", "dtype", "lora"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise MixDQError(f"model.{key}: expected a string, got {value!r}")
        if not self.model:
            raise MixDQError("model.model: empty model name")
        if isinstance(self.lora_scale, bool) or not isinstance(self.lora_scale, (int, float)):
            raise MixDQError(f"model.lora_scale: expected a number, got {self.lora_scale!r}")
        object.__setattr__(self, "lora_scale", float(self.lora_scale))

    def load(self, device=None, **kwargs):
        """The full-precision pipeline (LoRA fused); ``device`` overrides the spec's (a rank's
        GPU under torchrun). Other keywords go to :func:`quant.models.load_fp_pipeline`."""
        from .loading import load_fp_pipeline

        return load_fp_pipeline(self.model, device if device is not None else self.device,
                                self.dtype, lora=self.lora, lora_scale=self.lora_scale, **kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        if not isinstance(data, dict):
            raise MixDQError(f"model: expected a mapping, got {data!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise MixDQError(f"model.{key}: unknown setting; known: {', '.join(names)}")
        return cls(**data)
