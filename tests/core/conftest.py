"""Fixtures of the quantization-core tests: calibration batches recorded from the tiny pipeline.

A forward pre-hook on the UNet captures its call arguments and a forward hook its output, the
same dicts ``quant.calib.CalibrationData.batches`` yields.
"""

import copy

import pytest
import torch

PROMPTS = [
    "a man riding a red bicycle down a city street",
    "two dogs playing with a frisbee on the grass",
    "a plate with a sandwich and a banana on a table",
    "a large white airplane flying over the ocean",
    "a cat sitting on a couch next to a laptop",
    "a red bus parked near a tall building",
    "three people standing on a beach with surfboards",
    "a kitchen with a stove, a sink and a window",
]


def _clone(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


def record_unet_calls(pipe, prompts, *, steps=1, batch_size=2, seed=42):
    """Run ``pipe`` on ``prompts`` and return one dict per UNet call (inputs and ``output``)."""
    from quant.generate import generate

    calls = []

    def pre(module, args, kwargs):
        call = {"sample": args[0] if args else kwargs["sample"],
                "timestep": args[1] if len(args) > 1 else kwargs["timestep"],
                "encoder_hidden_states": kwargs["encoder_hidden_states"],
                "added_cond_kwargs": kwargs["added_cond_kwargs"]}
        calls.append(_clone(call))

    def post(module, args, kwargs, output):
        calls[-1]["output"] = _clone(output[0])
        calls[-1]["step"] = len(calls) - 1

    handles = [pipe.unet.register_forward_pre_hook(pre, with_kwargs=True),
               pipe.unet.register_forward_hook(post, with_kwargs=True)]
    try:
        for start in range(0, len(prompts), batch_size):
            generate(pipe, prompts[start:start + batch_size], steps=steps, seed=seed + start,
                     output_type="pt")
    finally:
        for h in handles:
            h.remove()
    return calls


@pytest.fixture(scope="session")
def session_pipe(tiny_dir):
    """One float tiny pipeline shared by the session (tests copy its UNet before changing it)."""
    from quant.models import load_fp_pipeline

    return load_fp_pipeline(str(tiny_dir), device="cpu")


@pytest.fixture(scope="session")
def calib_batches(session_pipe):
    """Four UNet calls (8 prompts, 1 step as SDXL-Turbo, batches of 2) with float outputs."""
    return record_unet_calls(session_pipe, PROMPTS)


@pytest.fixture(scope="session")
def outlier_batches(tiny_dir):
    """Calibration batches whose BOS text embedding has a CLIP-like outlier.

    Real SDXL text encoders put values in the hundreds on the BOS token's embedding; the tiny
    random encoders do not, so this scales the BOS token's input embedding of both encoders.
    """
    from quant.models import load_fp_pipeline

    pipe = load_fp_pipeline(str(tiny_dir), device="cpu")
    with torch.no_grad():
        for enc, tok in ((pipe.text_encoder, pipe.tokenizer),
                         (pipe.text_encoder_2, pipe.tokenizer_2)):
            emb = enc.get_input_embeddings().weight
            emb[tok.bos_token_id] *= 600.0
    return record_unet_calls(pipe, PROMPTS)


@pytest.fixture
def fp_unet(session_pipe):
    """A private copy of the float tiny UNet."""
    return copy.deepcopy(session_pipe.unet)
