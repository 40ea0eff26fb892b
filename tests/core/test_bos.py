"""BOS-aware text-embedding quantization: the BOS row is prompt-independent and kept exact."""

import copy
import json
import os

import pytest
import torch

from quant.bitmap import BitMap
from quant.quantize import quantize_unet, run_unet
from quant.structure import quantizable_layers

def _embeds(pipe, prompts):
    with torch.no_grad():
        embeds, *_ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    return embeds

def test_bos_row_does_not_depend_on_the_prompt(session_pipe):
    prompts = ["a cat", "two dogs playing with a frisbee on the grass near a lake",
               "zyzzyva", ""]
    together = _embeds(session_pipe, prompts)
    alone = torch.cat([_embeds(session_pipe, [p]) for p in prompts])
    assert together.shape[1] == 77
    assert all(torch.equal(together[i, 0], together[0, 0]) for i in range(len(prompts)))
    assert torch.equal(alone[:, 0], together[:, 0])
    assert not torch.equal(together[0, 1], together[1, 1])  # later tokens do depend on it

def test_bos_row_with_a_clip_tokenizer(data_dir):
    """A CLIP text encoder (random weights) fed by a CLIP tokenizer (the shipped one, and the real
    one where ../shared is present) on COCO captions."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(os.path.join(data_dir, "clip_tokenizer"),
                                        model_max_length=77)
    with open(os.path.join(data_dir, "coco_captions_val2017.json")) as f:
        captions = [a["caption"] for a in json.load(f)["annotations"][:6]]
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32,
                                       intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=2, max_position_embeddings=77))
    ids = tok(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert bool((ids[:, 0] == tok.bos_token_id).all())
    assert tok.bos_token_id == (49406 if len(tok) > 49406 else 868)  # real CLIP / shipped
    with torch.no_grad():
        hidden = enc(ids, output_hidden_states=True).hidden_states[-2]  # what SDXL uses
    assert all(torch.allclose(hidden[i, 0], hidden[0, 0], rtol=0, atol=1e-6)
               for i in range(len(captions)))
    assert (hidden[:, 1] - hidden[0, 1]).abs().max() > 1e-2

def _kv_layers(unet):
    return {n: m for n, m in quantizable_layers(unet).items() if m.bos}

def test_quantized_kv_layers_keep_the_bos_row(session_pipe, calib_batches):
    unet = copy.deepcopy(session_pipe.unet)
    quantize_unet(unet, BitMap.preset(quantizable_layers(unet), "W8A8"), calib_batches,
                  progress=False)
    kv = _kv_layers(unet)
    assert len(kv) == 34 and all(m.bos_row is not None for m in kv.values())
    fp_layers = quantizable_layers(session_pipe.unet)
    text = calib_batches[0]["encoder_hidden_states"]
    with torch.no_grad():
        for name, layer in kv.items():
            y = layer(text)
            # row 0 is the stored full-precision row, bit for bit ...
            assert torch.equal(y[:, 0], layer.bos_row.expand(len(text), -1))
            # ... which is the float layer's output for the BOS token
            torch.testing.assert_close(y[:, 0], fp_layers[name](text)[:, 0], rtol=1e-6,
                                       atol=1e-6)
            # rows 1.. are quantized exactly as if the BOS token were not there
            body = layer._op(layer._quantize_input(text[:, 1:]), layer.effective_weight())
            assert torch.equal(y[:, 1:], body)

def test_without_bos_the_first_row_is_quantized(session_pipe, outlier_batches):
    unet = copy.deepcopy(session_pipe.unet)
    quantize_unet(unet, BitMap.preset(quantizable_layers(unet), "W8A8"), outlier_batches,
                  bos=False, progress=False)
    fp_layers = quantizable_layers(session_pipe.unet)
    text = outlier_batches[0]["encoder_hidden_states"]
    name, layer = next((n, m) for n, m in quantizable_layers(unet).items()
                       if n.endswith("attn2.to_k"))
    assert not layer.bos and layer.bos_row is None
    (lo, hi), = layer.act_range
    assert hi - lo > 20  # the outlier sets the range for every token
    with torch.no_grad():
        assert not torch.equal(layer(text)[:, 0], fp_layers[name](text)[:, 0])
        run_unet(unet, outlier_batches[0])


def test_bos_observer_tolerance():
    from quant.bos import BosObserver
    from quant.errors import MixDQError

    row = torch.linspace(-400, 300, 16)
    obs = BosObserver()
    obs.update(row.expand(3, -1))
    obs.update((row * (1 + 1e-5)).expand(2, -1))  # float noise between kernels is fine
    assert torch.equal(obs.constant_row("x"), row)
    obs.update(torch.stack([row, row.flip(0)]))
    with pytest.raises(MixDQError, match="layer x: the first \\(BOS\\) token's text embedding"):
        obs.constant_row("x")
    with pytest.raises(MixDQError, match="layer y: no BOS row was observed"):
        BosObserver().constant_row("y")
