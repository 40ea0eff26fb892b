"""The training recipe on a few steps of a throwaway pipeline (CPU, batch 2)."""

import dataclasses

import torch

from quant.proxy.model import add_time_ids, build_untrained, encode_text
from quant.proxy.train import (TrainConfig, few_step_timesteps, predicted_x0, sigma_table,
                               train_unet, train_vae)


def test_timesteps_and_x0_match_the_scheduler():
    pipe = build_untrained()
    sched = pipe.scheduler
    assert few_step_timesteps(sched) == [999, 749, 666, 499, 332, 249]
    sigmas = sigma_table(sched)
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 4):
        sched.set_timesteps(n)
        for i, t in enumerate(sched.timesteps):
            sigma = sigmas[int(t)]
            assert abs(float(sched.sigmas[i]) - float(sigma)) < 1e-4
            x = torch.randn(1, 4, 8, 8, generator=g) * sigma
            scaled = sched.scale_model_input(x, t)
            assert torch.allclose(scaled, x / (sigma ** 2 + 1).sqrt(), atol=1e-6)
            out = torch.randn(1, 4, 8, 8, generator=g)
            for kind in ("epsilon", "v_prediction"):
                sched.register_to_config(prediction_type=kind)
                sched._step_index = i
                step = sched.step(out, t, x, generator=g)
                assert torch.allclose(step.pred_original_sample,
                                      predicted_x0(out, x, sigma, kind), atol=1e-4)
            sched.register_to_config(prediction_type="epsilon")
        assert sched.init_noise_sigma == sigmas[999]  # 1 step starts from sigma_max * noise


def test_text_conditioning_matches_the_pipeline():
    pipe = build_untrained()
    caps = ["a large red circle at the top left", "a small blue square in the center"]
    embeds, pooled = encode_text(pipe, caps)
    ref = pipe.encode_prompt(caps, device="cpu", num_images_per_prompt=1,
                             do_classifier_free_guidance=False)
    assert torch.allclose(embeds, ref[0], atol=1e-6) and torch.allclose(pooled, ref[2], atol=1e-6)
    assert embeds.shape == (2, 77, 96)
    # causal CLIP: the BOS row does not depend on the prompt (what BOS-aware quantization needs)
    assert torch.equal(embeds[0, 0], embeds[1, 0])
    assert add_time_ids(3).tolist() == [[32, 32, 0, 0, 32, 32]] * 3


def _params(pipe):
    return torch.cat([p.detach().flatten() for m in (pipe.unet, pipe.text_encoder_2, pipe.vae)
                      for p in m.parameters()])


def test_training_resumes_exactly(tmp_path):
    cfg = TrainConfig(batch=2, vae_steps=2, unet_steps=3, warmup=1, checkpoint_every=1,
                      scale_images=8)
    straight = build_untrained()
    initial = _params(straight)
    train_vae(straight, cfg, tmp_path / "a")
    train_unet(straight, cfg, tmp_path / "a")

    resumed = build_untrained()
    short = dataclasses.replace(cfg, vae_steps=1, unet_steps=2)
    train_vae(resumed, short, tmp_path / "b")
    train_vae(resumed, cfg, tmp_path / "b")
    train_unet(resumed, short, tmp_path / "b")
    resumed = build_untrained()  # a fresh process: everything comes from the checkpoints
    train_vae(resumed, cfg, tmp_path / "b")
    train_unet(resumed, cfg, tmp_path / "b")
    assert torch.equal(_params(straight), _params(resumed))
    assert straight.vae.config.scaling_factor == resumed.vae.config.scaling_factor
    assert not torch.equal(_params(straight), initial)
