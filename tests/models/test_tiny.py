import torch
from torch import nn

from quant.models.tiny import TinyConfig, build_tiny_pipeline
from quant.structure import quantizable_layers


def test_tiny_has_sdxl_structure(tiny_pipe):
    unet = tiny_pipe.unet
    cfg = unet.config
    assert cfg.down_block_types == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert cfg.up_block_types == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert cfg.addition_embed_type == "text_time"
    depths = {len(a.transformer_blocks) for b in unet.down_blocks
              for a in getattr(b, "attentions", [])}
    assert depths == {1, 2}  # transformer blocks of more than one depth
    names = list(quantizable_layers(unet))
    assert any(n.endswith("ff.net.0.proj") for n in names)  # GEGLU
    assert sum(n.endswith("conv_shortcut") for n in names) >= 6
    assert any("downsamplers" in n for n in names) and any("upsamplers" in n for n in names)
    assert sum(n.endswith(("attn2.to_k", "attn2.to_v")) for n in names) > 0
    assert tiny_pipe.text_encoder_2.config.projection_dim == 32
    assert type(tiny_pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert tiny_pipe.scheduler.config.timestep_spacing == "trailing"
    assert type(tiny_pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert all(isinstance(m, (nn.Linear, nn.Conv2d)) for m in quantizable_layers(unet).values())


def test_tiny_tokenizer_is_real_bpe(tiny_pipe):
    tok = tiny_pipe.tokenizer
    ids = tok("a man riding a red bicycle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id
    words = tok.convert_ids_to_tokens(ids[1:7])
    assert words == ["a</w>", "man</w>", "riding</w>", "a</w>", "red</w>", "bicycle</w>"]
    # unknown words fall back to sub-word pieces, never to <unk>
    pieces = tok.convert_ids_to_tokens(tok("zyzzyva").input_ids[1:-1])
    assert len(pieces) > 1 and tok.unk_token not in pieces


def test_build_is_deterministic():
    a = build_tiny_pipeline(TinyConfig()).unet.state_dict()
    b = build_tiny_pipeline(TinyConfig()).unet.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build_tiny_pipeline(TinyConfig(seed=1)).unet.state_dict()
    assert not torch.equal(a["conv_in.weight"], c["conv_in.weight"])


def test_cached_folder_reloads_identically(tiny_dir, tiny_pipe):
    fresh = build_tiny_pipeline(TinyConfig()).unet.state_dict()
    loaded = tiny_pipe.unet.state_dict()
    assert all(torch.equal(fresh[k], loaded[k]) for k in fresh)
    assert (tiny_dir / "model_index.json").is_file()


def test_killed_build_leftovers_are_cleaned(tmp_path):
    from quant.models.tiny import TinyConfig, tiny_path

    (tmp_path / ".tiny-abc.x1y2.tmp").mkdir()          # a build killed half-way
    (tmp_path / ".tiny-abc.x1y2.tmp" / "model_index.json").write_text("{}")
    (tmp_path / ".tiny-def.zz.tmp").write_bytes(b"half")
    (tmp_path / "mine.txt").write_text("kept")
    path = tiny_path(TinyConfig(), cache_dir=tmp_path)
    assert (path / "model_index.json").is_file()
    assert (sorted(p.name for p in tmp_path.iterdir())
            == sorted([".tiny.lock", path.name, "mine.txt"]))
