"""The training recipe on a few steps of a throwaway pipeline (CPU, batch 2)."""

import dataclasses

import pytest
import torch

from quant.proxy.model import add_time_ids, build_untrained, encode_text
from quant.proxy.train import (
    TrainConfig,
    few_step_timesteps,
    predicted_x0,
    sigma_table,
    train_unet,
    train_vae,
)


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


def test_train_state_is_safetensors_not_pickle(tmp_path):
    from quant.errors import MixDQError
    from quant.proxy.state import load_state, save_state

    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3, betas=(0.9, 0.99))
    lin(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"step": 7, "opt": opt.state_dict(), "modules": [lin.state_dict()],
             "ema": [p.detach() * 2 for p in lin.parameters()]}
    path = tmp_path / "s.safetensors"
    save_state(path, state)
    back = load_state(path)
    assert back["step"] == 7 and back["opt"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert set(back["opt"]["state"]) == {0, 1}  # integer keys survive
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(back["ema"][1], state["ema"][1])
    fresh = torch.optim.AdamW(lin.parameters(), lr=1e-3)
    fresh.load_state_dict(back["opt"])  # loads into a real optimizer
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle stream
    assert load_state(tmp_path / "missing.safetensors") is None
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(MixDQError, match="unreadable") as exc:
        load_state(path)
    assert "\n" not in str(exc.value)
    pickled = tmp_path / "p.safetensors"
    torch.save({"step": 1}, pickled)  # a pickle is refused, never unpickled
    with pytest.raises(MixDQError):
        load_state(pickled)


def test_no_pickle_loads_in_the_proxy_package():
    from pathlib import Path

    import quant.proxy

    for path in Path(quant.proxy.__file__).parent.glob("*.py"):
        text = path.read_text()
        for call in ("torch.load(", "import pickle", "pickle.load", "weights_only=False"):
            assert call not in text.replace("``torch.load`` of", ""), (path.name, call)


def test_noise_path_passes_the_input_through():
    from quant.proxy.model import first_step_gain

    pipe = build_untrained()
    unet = pipe.unet
    gain = first_step_gain(pipe.scheduler)
    assert abs(gain - 1.0023) < 1e-4  # sqrt(sigma_max^2 + 1) / sigma_max, sigma_max = 14.6
    with torch.no_grad():  # keep only the pass-through's share of conv_out
        mask = torch.zeros_like(unet.conv_out.weight)
        for c in range(4):
            mask[:, 16 + 4 * c:18 + 4 * c] = 1
        unet.conv_out.weight.mul_(mask)
        unet.conv_out.bias.zero_()
        x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        emb = torch.randn(4, 77, 96, generator=torch.Generator().manual_seed(1))
        cond = {"text_embeds": torch.zeros(4, 32), "time_ids": add_time_ids(4)}
        out = unet(x, torch.full((4,), 999.0), emb, added_cond_kwargs=cond).sample
    sqnr = 10 * torch.log10((gain * x).pow(2).sum() / (out - gain * x).pow(2).sum())
    assert sqnr > 60, float(sqnr)  # needs ~35 dB before a one-step image appears


def test_bos_outlier_is_fixed_and_large():
    from quant.proxy.model import BOS_PEAK, bos_outlier_ratio

    pipe = build_untrained()
    caps = ["a large red circle at the top left", "a small yellow triangle in the center"]
    embeds, _ = encode_text(pipe, caps)
    assert torch.equal(embeds[0, 0], embeds[1, 0])
    assert embeds[0, 0].abs().max() > 0.9 * BOS_PEAK
    assert bos_outlier_ratio(embeds) >= 20
    # training puts the row back after every step
    cfg = TrainConfig(batch=2, vae_steps=0, unet_steps=1, warmup=1, scale_images=8)
    emb = pipe.text_encoder.get_input_embeddings().weight
    before = emb[pipe.tokenizer.bos_token_id].clone()
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        train_unet(pipe, cfg, Path(tmp))
    assert torch.equal(emb[pipe.tokenizer.bos_token_id], before)
