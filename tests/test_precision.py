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


def test_nan_message_names_the_model_and_no_fp32_advice_in_fp32(tiny_pipe):
    with torch.no_grad():
        tiny_pipe.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(MixDQError) as info:
        generate(tiny_pipe, ["a dog"])
    message = str(info.value)
    assert "(float32)" in message and "--dtype fp32" not in message
    assert "of model " in message and "already runs in float32" in message
    from quant.precision import check_finite
    with pytest.raises(MixDQError,
                       match=r"NaN in the UNet output of w4a8 \(bfloat16\); .*--dtype fp32"):
        check_finite(torch.tensor([float("nan")], dtype=torch.bfloat16), "UNet", "w4a8")


@pytest.mark.parametrize("kwargs, match", [
    ({"guidance": float("nan")}, "guidance must be a finite number >= 0, got nan"),
    ({"guidance": float("inf")}, "guidance must be a finite number"),
    ({"resolution": 100000},
     "resolution must be a multiple of 8 from 8 to 4096 pixels, got 100000"),
    ({"resolution": 60}, "got 60"),
])
def test_generation_arguments_are_bounded(tiny_pipe, kwargs, match):
    with pytest.raises(MixDQError, match=match):
        generate(tiny_pipe, ["a dog"], **kwargs)


def test_long_prompts_warn_that_they_are_truncated(tiny_pipe):
    long = "a photo of " + "a very red cat and " * 30
    with pytest.warns(UserWarning, match=r"prompt 1 .* tokens; the text encoder reads only the "
                                         r"first 77"):
        generate(tiny_pipe, ["a dog", long], output_type="pt")
