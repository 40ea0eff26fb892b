import pytest
import torch

from quant.errors import MixDQError
from quant.generate import generate
from quant.models import load_fp_pipeline
from quant.precision import resolve_dtype


def test_fp16_on_cpu_warns_and_uses_float32():
    with pytest.warns(UserWarning, match="float32"):
        assert resolve_dtype("cpu", "fp16") == torch.float32
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cuda") == torch.float16
    assert resolve_dtype("cuda", "bf16") == torch.bfloat16


def test_fp16_request_on_cpu_loads_float32(tiny_dir):
    with pytest.warns(UserWarning):
        pipe = load_fp_pipeline(str(tiny_dir), device="cpu", dtype="fp16")
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    assert generate(pipe, ["a cat"], output_type="pt").shape == (1, 3, 64, 64)


def test_unknown_dtype_is_an_error():
    with pytest.raises(MixDQError, match="unknown dtype"):
        resolve_dtype("cpu", "fp8")


def test_guard_casts_unet_inputs(tiny_pipe):
    # Half-precision UNet, float32 text encoders: the stock pipeline would feed float32
    # embeddings into a bf16 matmul. bf16 stands in for fp16, which CPU kernels lack.
    tiny_pipe.unet.to(torch.bfloat16)
    image = generate(tiny_pipe, ["a dog"], output_type="pt")
    assert torch.isfinite(image).all()
    tiny_pipe.mixdq_guard.remove()
    with pytest.raises(RuntimeError, match="dtype|scalar type"):
        generate(tiny_pipe, ["a dog"], output_type="pt")


def test_nan_in_unet_names_the_unet(tiny_pipe):
    with torch.no_grad():
        tiny_pipe.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(MixDQError, match="NaN in the UNet output"):
        generate(tiny_pipe, ["a dog"])


def test_inf_in_vae_names_the_vae(tiny_pipe):
    with torch.no_grad():
        tiny_pipe.vae.decoder.conv_out.bias.fill_(float("inf"))
    with pytest.raises(MixDQError, match="Inf in the VAE decoder output"):
        generate(tiny_pipe, ["a dog"])
