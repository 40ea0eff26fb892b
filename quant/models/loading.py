"""One loader for every stage: Hub id, local diffusers folder, or ``tiny``."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import MixDQError
from ..precision import PrecisionGuard, default_device, resolve_dtype
from ..utils.quiet import quiet_libraries

DEFAULT_MODEL = "stabilityai/sdxl-turbo"


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(model: str) -> str:
    """Return what ``from_pretrained`` should load: a local folder path or a cached Hub id.

    ``"tiny"`` is built and cached on first use; ``"proxy"`` is the trained proxy's shipped folder.

    Raises:
        MixDQError: a folder that is not a diffusers pipeline, or a Hub id that is neither cached
            nor downloadable (decided within a few seconds, not after long retries).
    """
    if model == "tiny":
        from .tiny import tiny_path

        return str(tiny_path())
    from .tiny_families import TINY_FAMILIES, tiny_family_path

    if model in TINY_FAMILIES:  # tiny-sd15, tiny-sd21, tiny-sdxl
        return str(tiny_family_path(model))
    if model == "proxy":  # the trained proxy shipped with the package (quant/proxy)
        from .proxy_files import require_pipeline_dir

        return str(require_pipeline_dir())
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        if not (path / "model_index.json").is_file():
            raise MixDQError(f"--model {model}: not a diffusers pipeline folder "
                             f"(no model_index.json)")
        return str(path)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, local_files_only=True,
                                 allow_patterns=["model_index.json"]) and model
    except Exception:
        pass
    if not _hub_reachable():
        raise MixDQError(
            f"--model {model}: not in the local Hugging Face cache and the Hub is unreachable; "
            f"download it where there is network (`hf download {model}`) and copy the cache, "
            f"or pass --model /path/to/a/diffusers/folder")
    return model


def load_fp_pipeline(model: str = DEFAULT_MODEL, device: str | torch.device | None = None,
                     dtype: str | torch.dtype | None = None, guard: bool = True,
                     lora: str | None = None, lora_scale: float = 1.0,
                     scheduler: str | None = None):
    """Load a full-precision pipeline under the precision policy.

    The pipeline class is the one the folder's ``model_index.json`` names (see
    :mod:`quant.models.families`); an unsupported class is refused with its name.

    Args:
        model: Hub id (default SDXL-Turbo), local diffusers folder, ``"tiny"`` or one of the
            tiny families (``tiny-sd15``, ``tiny-sd21``, ``tiny-sdxl``).
        device: ``"cpu"``, ``"cuda"``...; default CUDA when present.
        dtype: compute dtype request; see :func:`quant.precision.resolve_dtype`.
        guard: attach a :class:`PrecisionGuard` (input casting, NaN checks) as
            ``pipe.mixdq_guard``.
        lora: a LoRA (file, folder or Hub id that ``pipe.load_lora_weights`` reads) to fuse into
            the weights before anything else. Quantization works on the fused weights, so a
            LoRA must be fused before quantizing and the same LoRA given again when the
            quantized checkpoint is loaded (the checkpoint's UNet fingerprint checks this).
            A LoRA that needs its own scheduler (LCM-LoRA, SDXL-Lightning) switches to it.
        lora_scale: strength of the fused LoRA.
        scheduler: a diffusers scheduler class name replacing the pipeline's (after the LoRA's),
            built from the pipeline's scheduler config.

    Returns:
        The diffusers pipeline (``StableDiffusionXLPipeline``, ``StableDiffusionPipeline``...)
        on ``device`` with the progress bar disabled.
    """
    with quiet_libraries():  # diffusers/transformers loading chatter is not the user's business
        return _load_fp_pipeline(model, device, dtype, guard, lora, lora_scale, scheduler)


def _load_fp_pipeline(model, device, dtype, guard, lora, lora_scale, scheduler):
    from .families import detect, read_model_index

    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(device, dtype)
    source = resolve_model(model)
    _, pipeline_cls = detect(read_model_index(source), model)
    local_only = Path(source).exists() or not _hub_reachable(timeout=1.0)
    kwargs = dict(dtype=dtype, local_files_only=local_only)
    try:
        if dtype == torch.float16 and not Path(source).exists():
            try:
                pipe = pipeline_cls.from_pretrained(source, variant="fp16", **kwargs)
            except (OSError, ValueError):
                pipe = pipeline_cls.from_pretrained(source, **kwargs)
        else:
            pipe = pipeline_cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise MixDQError(f"--model {model}: could not load the pipeline: "
                         f"{str(e).splitlines()[0]}") from e
    if lora is not None:
        fuse_lora(pipe, lora, lora_scale)
    if scheduler is not None:
        from .families import set_scheduler

        set_scheduler(pipe, scheduler)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if guard:
        pipe.mixdq_guard = PrecisionGuard(pipe, name=f"model {model}")
    return pipe


def fuse_lora(pipe, lora: str, scale: float = 1.0) -> None:
    """Load a LoRA, fuse it into the pipeline's weights and drop the adapter modules.

    ``owner/repo/file.safetensors`` names one file of a Hub repo holding several
    (``ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors``).

    Raises:
        MixDQError: ``peft`` missing, or the LoRA cannot be read or does not fit the model.
    """
    from .families import scheduler_for_lora, set_scheduler

    try:
        import peft  # noqa: F401
    except ImportError:
        raise MixDQError("--lora needs the peft package: pip install 'mixdq[lora]'") from None
    try:
        kwargs = {}
        if lora.count("/") == 2 and not Path(lora).exists():
            repo, kwargs["weight_name"] = lora.rsplit("/", 1)
        else:
            repo = lora
        pipe.load_lora_weights(repo, adapter_name="mixdq_lora", **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise MixDQError(f"--lora {lora}: could not load it ({str(e).splitlines()[0]})") from e
    pipe.fuse_lora(lora_scale=scale, adapter_names=["mixdq_lora"])
    pipe.unload_lora_weights()
    scheduler = scheduler_for_lora(lora)
    if scheduler is not None:
        set_scheduler(pipe, scheduler[0], **scheduler[1])
