"""Shared fixtures. Tests run offline, on one thread, with the tiny model cached per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device present: CPU always, CUDA where there is one."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny pipeline's diffusers folder, built once per test session."""
    from quant.models.tiny import tiny_path

    return tiny_path(cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def tiny_pipe(tiny_dir):
    """A fresh float32 tiny pipeline on CPU (each test may modify it)."""
    from quant.models import load_fp_pipeline

    return load_fp_pipeline(str(tiny_dir), device="cpu")


def make_lora(tiny_dir, path):
    """A random LoRA on the tiny UNet's attention projections, saved as diffusers does."""
    peft = pytest.importorskip("peft")
    from diffusers import StableDiffusionXLPipeline

    from quant.models import load_fp_pipeline

    pipe = load_fp_pipeline(str(tiny_dir), "cpu")
    torch.manual_seed(0)
    pipe.unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                          target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionXLPipeline.save_lora_weights(
        path, unet_lora_layers=peft.utils.get_peft_model_state_dict(pipe.unet))
    return path


@pytest.fixture(scope="session")
def tiny_lora(tiny_dir, tmp_path_factory):
    """A LoRA folder for the tiny pipeline (see :func:`make_lora`)."""
    return make_lora(tiny_dir, tmp_path_factory.mktemp("lora") / "lora")


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    path = os.path.abspath(SHARED_DATA)
    if not os.path.isdir(path):
        pytest.skip("../shared/data is not present beside this checkout")
    return path
