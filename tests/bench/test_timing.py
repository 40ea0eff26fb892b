import torch
from torch import nn

from quant.bench.timing import UNetInputCapture, capture_unet_inputs, measure_unet, weight_bytes


def test_weight_bytes_of_a_float_unet(tiny_pipe):
    unet = tiny_pipe.unet
    expected = sum(t.numel() * t.element_size()
                   for t in list(unet.parameters()) + list(unet.buffers()))
    assert weight_bytes(unet) == expected
    assert weight_bytes(unet) == 4 * sum(p.numel() for p in unet.parameters()) + sum(
        b.numel() * b.element_size() for b in unet.buffers())


class _PackedLinear(nn.Linear):
    """A layer that reports its deployable size: int4 weights packed two per byte, fp32 scales."""

    def quantized_nbytes(self) -> int:
        return self.weight.numel() // 2 + 4 * self.out_features + 4 * self.out_features


def test_quantized_nbytes_replaces_the_float_size():
    model = nn.Sequential(nn.Linear(8, 16), _PackedLinear(16, 32), nn.Linear(32, 4, bias=False))
    expected = (8 * 16 + 16) * 4 + (16 * 32 // 2 + 4 * 32 + 4 * 32) + 32 * 4 * 4
    assert weight_bytes(model) == expected


def test_shared_tensors_count_once():
    a = nn.Linear(4, 4, bias=False)
    b = nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert weight_bytes(nn.Sequential(a, b)) == 16 * 4


def test_captured_inputs_reproduce_the_unet_call(tiny_pipe, coco_prompts):
    hooks_before = len(tiny_pipe.unet._forward_pre_hooks)
    args, kwargs = capture_unet_inputs(tiny_pipe, coco_prompts[0], seed=5)
    assert len(tiny_pipe.unet._forward_pre_hooks) == hooks_before  # the capture hook is gone
    sample = args[0] if args else kwargs["sample"]
    assert sample.shape == (1, 4, 16, 16)
    assert kwargs["encoder_hidden_states"].shape[:2] == (1, 77)
    assert set(kwargs["added_cond_kwargs"]) == {"text_embeds", "time_ids"}
    with torch.no_grad():
        first = tiny_pipe.unet.forward(*args, **kwargs)[0]
        again = tiny_pipe.unet.forward(*args, **kwargs)[0]
    assert torch.equal(first, again) and torch.isfinite(first).all()


def test_capture_keeps_only_the_first_call():
    layer = nn.Linear(2, 2)
    with UNetInputCapture(layer) as capture:
        layer(torch.ones(1, 2))
        layer(torch.zeros(1, 2))
    assert torch.equal(capture.args[0], torch.ones(1, 2))


def test_measure_unet_on_cpu(tiny_pipe, coco_prompts):
    import statistics
    import time

    args, kwargs = capture_unet_inputs(tiny_pipe, coco_prompts[0])
    start = time.perf_counter()
    perf = measure_unet(tiny_pipe, args, kwargs, repeats=4, warmup=1)
    elapsed_ms = (time.perf_counter() - start) * 1000
    assert perf.timer == "wall-clock" and perf.device == "cpu"
    assert len(perf.latency_ms_all) == 4
    # milliseconds, of the timed calls only: 4 timed calls fit in the whole call's wall time
    # (which also holds the warm-up), and a UNet call takes more than 10 us
    assert sum(perf.latency_ms_all) < elapsed_ms and min(perf.latency_ms_all) > 0.01
    assert perf.latency_ms == statistics.median(perf.latency_ms_all)
    assert perf.peak_memory_bytes is None and "n/a" in perf.memory_note
    assert perf.weight_bytes == weight_bytes(tiny_pipe.unet)


def test_weight_bytes_of_a_quantized_unet_match_its_checkpoint(tiny_dir, quant_dirs):
    """Packed integer weights + scales as stored in the checkpoint, plus the float rest."""
    from safetensors import safe_open

    from quant.checkpoint import load_quantized
    from quant.models import load_fp_pipeline

    for preset in ("W8A8", "W4A8"):
        unet = load_fp_pipeline(str(tiny_dir), device="cpu").unet
        load_quantized(unet, quant_dirs[preset])
        quantized = {n: m for n, m in unet.named_modules()
                     if getattr(m, "is_quantized_module", False)}
        stored = 0
        with safe_open(str(quant_dirs[preset] / "unet_quant.safetensors"), "pt") as f:
            for key in f.keys():
                if not key.endswith(".act_range"):  # calibration record, not used to run
                    t = f.get_tensor(key)
                    stored += t.numel() * t.element_size()
        in_layers = {id(p) for m in quantized.values() for p in m.parameters()}
        rest = sum(p.numel() * p.element_size() for p in unet.parameters()
                   if id(p) not in in_layers)
        biases = sum(m.bias.numel() * 4 for m in quantized.values() if m.bias is not None)
        assert weight_bytes(unet) == stored + rest + biases, preset
