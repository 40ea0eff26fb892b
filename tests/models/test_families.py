"""Pipeline families: detection from model_index.json, clear refusals, tiny family builds."""

import json

import pytest
import torch

from quant.errors import MixDQError
from quant.models.families import (
    defaults,
    detect,
    family_of,
    read_model_index,
    scheduler_for_lora,
)
from quant.models.tiny_families import build_tiny_family, tiny_family_path


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: tiny_family_path(name, cache_dir=root)
            for name in ("tiny-sd15", "tiny-sd21", "tiny-sdxl")}


@pytest.mark.parametrize("name,cls,family,scheduler,steps,guidance", [
    ("tiny-sd15", "StableDiffusionPipeline", "sd", "LCMScheduler", 4, 1.0),
    ("tiny-sd21", "StableDiffusionPipeline", "sd", "EulerAncestralDiscreteScheduler", 1, 0.0),
    ("tiny-sdxl", "StableDiffusionXLPipeline", "sdxl", "EulerDiscreteScheduler", 4, 0.0),
])
def test_tiny_families_load_as_their_class(family_dirs, name, cls, family, scheduler, steps,
                                           guidance):
    from quant.models import load_fp_pipeline

    index = read_model_index(str(family_dirs[name]))
    fam, pipeline_cls = detect(index)
    assert (fam.name, pipeline_cls.__name__) == (family, cls)
    pipe = load_fp_pipeline(str(family_dirs[name]), device="cpu")
    assert type(pipe).__name__ == cls and family_of(pipe) == fam
    assert type(pipe.scheduler).__name__ == scheduler
    d = defaults(pipe)
    assert (d.steps, d.guidance, d.resolution) == (steps, guidance, 64)
    unet = pipe.unet.config
    assert (unet.addition_embed_type == "text_time") == (family == "sdxl")
    if name == "tiny-sd15":  # SD 1.5: conv projections, CLIP-L-style text (quick GELU)
        assert not unet.use_linear_projection and unet.cross_attention_dim == 32
        assert pipe.text_encoder.config.hidden_act == "quick_gelu"
        assert isinstance(pipe.unet.down_blocks[0].attentions[0].proj_in, torch.nn.Conv2d)
    if name == "tiny-sd21":  # SD 2.1: linear projections, OpenCLIP-style text ("!" padding)
        assert unet.use_linear_projection and unet.cross_attention_dim == 64
        assert pipe.text_encoder.config.hidden_act == "gelu"
        assert pipe.tokenizer.pad_token == "!"
    if name == "tiny-sdxl":
        assert pipe.scheduler.config.timestep_spacing == "trailing"


def test_tiny_family_builds_are_deterministic():
    a, b = build_tiny_family("tiny-sd21"), build_tiny_family("tiny-sd21")
    for (k, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(MixDQError, match="unknown tiny model tiny-sd3"):
        build_tiny_family("tiny-sd3")


def _index(tmp_path, cls, unet=("diffusers", "UNet2DConditionModel")):
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": cls, "unet": list(unet), "text_encoder": ["transformers", "X"]}))
    return read_model_index(str(tmp_path))


def test_unsupported_pipelines_are_refused_by_name(tmp_path):
    with pytest.raises(MixDQError, match="pipeline class FluxPipeline is not supported.*"
                                         "FluxTransformer2DModel"):
        detect(_index(tmp_path, "FluxPipeline", ("diffusers", "FluxTransformer2DModel")))
    with pytest.raises(MixDQError, match="pipeline class NoSuchPipeline is not in this diffusers"):
        detect(_index(tmp_path, "NoSuchPipeline"))
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(MixDQError, match="names no pipeline class"):
        read_model_index(str(tmp_path))


def test_other_unet_pipelines_are_generic(tmp_path):
    fam, cls = detect(_index(tmp_path, "LatentConsistencyModelPipeline"))
    assert fam.name == "generic" and cls.__name__ == "LatentConsistencyModelPipeline"
    assert fam.text_encoders == 1 and not fam.added_conditions


def test_lora_schedulers():
    assert scheduler_for_lora("latent-consistency/lcm-lora-sdv1-5") == ("LCMScheduler", {})
    assert scheduler_for_lora("ByteDance/SDXL-Lightning/sdxl_lightning_4step_lora.safetensors") \
        == ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"})
    assert scheduler_for_lora("some/style-lora") is None
