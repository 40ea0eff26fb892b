"""The shipped proxy: loads as --model proxy, is tiny-shaped, and draws what captions say."""

import pytest
import torch

from quant.errors import MixDQError
from quant.models import resolve_model
from quant.proxy import model as proxy_model
from quant.proxy.metrics import eval_captions, evaluate, generate_images
from quant.structure import quantizable_layers


def test_model_proxy_resolves_to_the_shipped_folder():
    assert resolve_model("proxy") == str(proxy_model.pipeline_dir())
    assert proxy_model.classifier_file().is_file()
    total = sum(f.stat().st_size for f in proxy_model.weights_root().rglob("*") if f.is_file())
    assert total < 10 * 2 ** 20  # ships with the package


def test_missing_weights_say_how_to_train(monkeypatch, tmp_path):
    from quant.models import proxy_files

    monkeypatch.setattr(proxy_files, "pipeline_dir", lambda: tmp_path / "pipeline")
    with pytest.raises(MixDQError, match="train_proxy.py") as exc:
        resolve_model("proxy")
    assert "\n" not in str(exc.value)


def test_proxy_has_the_tiny_structure(proxy_pipe_shared):
    pipe = proxy_pipe_shared
    tiny = proxy_model.build_tiny_pipeline(proxy_model.TinyConfig())
    assert list(quantizable_layers(pipe.unet)) == list(quantizable_layers(tiny.unet))
    assert pipe.unet.dtype == torch.float32
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == proxy_model.RESOLUTION


def test_bos_row_is_prompt_independent(proxy_pipe_shared):
    embeds = proxy_pipe_shared.encode_prompt(
        ["a large red circle at the top left", "a small yellow triangle in the center"],
        device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)[0]
    assert torch.equal(embeds[0, 0], embeds[1, 0])
    assert not torch.allclose(embeds[0, 1:8], embeds[1, 1:8])


def test_bos_row_is_an_outlier_that_quant_bos_handles(proxy_pipe_shared):
    """Like CLIP's in SDXL: the BOS row dwarfs every other token, and the generic BOS observer
    accepts it as constant (no special case for the proxy)."""
    from quant.bos import BosObserver
    from quant.proxy.scenes import HELD_OUT

    embeds = proxy_pipe_shared.encode_prompt(
        [s.caption for s in HELD_OUT], device="cpu", num_images_per_prompt=1,
        do_classifier_free_guidance=False)[0]
    # 16.5x on the shipped weights: training grew the other tokens' peaks to ~2.8 (the row
    # itself is 46.3); untrained it is above 20x (tests/proxy/test_train.py)
    assert proxy_model.bos_outlier_ratio(embeds) >= 15
    assert embeds[:, 0].abs().max() > 0.9 * proxy_model.BOS_PEAK
    observer = BosObserver()
    for chunk in embeds.split(3):
        observer.update(chunk[:, 0])
    assert torch.equal(observer.constant_row("to_k"), embeds[0, 0])


def test_one_step_epsilon_from_the_trailing_timestep(proxy_pipe_shared):
    sched = proxy_pipe_shared.scheduler
    assert sched.config.prediction_type == "epsilon"
    sched.set_timesteps(1)
    assert sched.timesteps.tolist() == [999]
    assert abs(float(sched.init_noise_sigma) - 14.6146) < 1e-3  # x0 = x - 14.6 * eps


def test_held_out_captions_are_drawn_right(proxy_pipe_shared, proxy_classifier):
    """Content accuracy of one-step full-precision generation on captions never trained on."""
    captions = eval_captions("heldout", 4)
    result = evaluate(proxy_pipe_shared, captions, seed=42, classifier=proxy_classifier)
    assert result["content_acc"] >= 0.9, result
    again = evaluate(proxy_pipe_shared, captions[:8], seed=42, classifier=proxy_classifier,
                     reference_images=result["images"][:8])
    # the same seeds give the same images (up to float rounding: the batch sizes differ)
    assert again["sqnr_db"] > 90 and again["ssim"] > 0.999 and again["content_acc"] == 1


def test_the_caption_conditions_the_image(proxy_pipe_shared):
    a = generate_images(proxy_pipe_shared, ["a large red circle at the top left"], seed=3)
    b = generate_images(proxy_pipe_shared, ["a large blue circle at the top left"], seed=3)
    assert a[0, 0, 4:12, 4:12].mean() > 0.6 > b[0, 0, 4:12, 4:12].mean()  # red channel
    assert b[0, 2, 4:12, 4:12].mean() > 0.6 > a[0, 2, 4:12, 4:12].mean()  # blue channel


def test_cli_generate_proxy(tmp_path, proxy_classifier):
    import numpy as np
    from PIL import Image

    from quant.cli import main
    from quant.proxy.scenes import Scene

    out = tmp_path / "x.png"
    caption = "a small green triangle at the bottom right"
    assert main(["generate", "--model", "proxy", "--prompt", caption, "--device", "cpu",
                 "--out", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32) / 255
    assert image.shape == (32, 32, 3)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    assert proxy_classifier.predict(tensor)[0] == Scene.from_caption(caption)
