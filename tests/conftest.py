"""Shared fixtures. Tests run offline, on one thread, with the tiny model cached per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")
# MIXDQ_TEST_NO_SHARED=1 runs the suite as on a fresh clone, with ../shared out of sight
HAS_SHARED = os.path.isdir(SHARED_DATA) and os.environ.get("MIXDQ_TEST_NO_SHARED") != "1"
BUNDLED_PROMPTS = os.path.join(ROOT, "configs", "prompts", "coco2017_val_first1024.txt")

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
def bundled_data(tmp_path_factory):
    """A data folder made only from what ships with the repository, laid out as
    ``../shared/data``: the bundled COCO val2017 captions as a COCO caption JSON (two captions per
    image, the bundled one first) and as a CSV with a ``text`` column, and the shipped CLIP-style
    tokenizer saved as ``clip_tokenizer/``."""
    import csv
    import json

    from quant.models.tokenizer import build_clip_tokenizer

    out = tmp_path_factory.mktemp("data")
    with open(BUNDLED_PROMPTS, encoding="utf-8") as f:
        captions = [line.strip() for line in f if line.strip()]
    images = [{"id": 100000 + 7 * i} for i in range(len(captions))]
    annotations = []
    for i, (image, caption) in enumerate(zip(images, captions)):
        annotations.append({"image_id": image["id"], "id": 2 * i, "caption": caption})
    for i, image in enumerate(images):  # second captions come later in the file, as in COCO
        annotations.append({"image_id": image["id"], "id": 2 * i + 1,
                            "caption": f"{captions[-1 - i]} (second caption)"})
    # the images list in another order than the annotations (as in COCO): readers must follow
    # the annotations' order of first appearance to get the bundled file's order back
    (out / "coco_captions_val2017.json").write_text(
        json.dumps({"images": images[::-1], "annotations": annotations}), encoding="utf-8")
    with open(out / "coco30k_val2014_prompts.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "text"])
        writer.writerows([f"COCO_val2014_{i:012d}.jpg", c] for i, c in enumerate(captions))
    build_clip_tokenizer().save_pretrained(str(out / "clip_tokenizer"))
    return str(out)


@pytest.fixture(scope="session", params=["bundled"] + (["shared"] if HAS_SHARED else []))
def data_dir(request, bundled_data):
    """The bundled data folder, and ``../shared/data`` as an extra case where it is present."""
    return bundled_data if request.param == "bundled" else os.path.abspath(SHARED_DATA)
