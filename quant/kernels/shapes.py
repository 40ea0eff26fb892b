"""The GEMM shapes of a UNet's Linear and Conv2d layers, read by running it on the meta device.

No weights and no compute: the real SDXL configuration (``configs/sdxl_unet.json``) is built on
the meta device and called once with meta inputs of the requested resolution and batch; hooks
record each layer's input and output shapes.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class GemmShape:
    """One distinct layer shape.

    For linear layers ``M`` is the number of input rows (tokens x batch), ``K`` the input and
    ``N`` the output features. For convolutions the input image is ``[batch, H, W, C]`` and
    ``M = batch * OH * OW``, ``K = C * kh * kw``.
    """

    kind: str
    M: int
    N: int
    K: int
    batch: int = 0
    H: int = 0
    W: int = 0
    C: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def label(self) -> str:
        if self.kind == "linear":
            return f"linear {self.M}x{self.K}->{self.N}"
        kh, kw = self.kernel
        s = f"/s{self.stride[0]}" if self.stride != (1, 1) else ""
        return f"conv{kh}x{kw}{s} {self.batch}x{self.H}x{self.W}x{self.C}->{self.N}"

    @property
    def macs(self) -> int:
        return self.M * self.N * self.K


def sdxl_unet_meta(config: dict | None = None) -> nn.Module:
    """The SDXL UNet (or one from ``config``) on the meta device."""
    from ..unet import random_unet, sdxl_unet_config

    return random_unet(config if config is not None else sdxl_unet_config(), meta=True)


def unet_inputs(unet: nn.Module, resolution: int, batch: int, device, dtype) -> dict:
    """UNet call arguments for ``batch`` images of ``resolution`` px (SDXL conditioning)."""
    cfg = unet.config
    side = resolution // 8
    text = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    ehs = torch.randn(batch, 77, cfg.cross_attention_dim, device=device, dtype=dtype)
    if device != torch.device("meta") and str(device) != "meta":
        ehs[:, 0] = torch.linspace(-3, 3, cfg.cross_attention_dim, device=device, dtype=dtype)
    time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution],
                            dtype=dtype).repeat(batch, 1)
    return {"sample": torch.randn(batch, cfg.in_channels, side, side, device=device,
                                  dtype=dtype),
            "timestep": torch.tensor(999.0, device=device),
            "encoder_hidden_states": ehs,
            "added_cond_kwargs": {"text_embeds": torch.randn(batch, text, device=device,
                                                             dtype=dtype),
                                  "time_ids": time_ids.to(device)}}


def layer_shapes(unet: nn.Module, resolution: int, batch: int) -> dict[str, GemmShape]:
    """Each Linear/Conv2d of a meta-device ``unet`` -> its GEMM shape at this size."""
    shapes: dict[str, GemmShape] = {}

    def hook(name):
        def record(module, args, output):
            x = args[0]
            if isinstance(module, nn.Linear):
                m = x.numel() // x.shape[-1]
                shapes[name] = GemmShape("linear", m, module.out_features, module.in_features)
            else:
                b, c, h, w = x.shape
                kh, kw = module.kernel_size
                oh, ow = output.shape[-2:]
                shapes[name] = GemmShape("conv2d", b * oh * ow, module.out_channels, c * kh * kw,
                                         b, h, w, c, (kh, kw), tuple(module.stride),
                                         tuple(module.padding))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in unet.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            dtype = next(unet.parameters()).dtype
            unet(**unet_inputs(unet, resolution, batch, torch.device("meta"), dtype))
    finally:
        for h in handles:
            h.remove()
    return shapes


def distinct_shapes(unet: nn.Module, resolution: int, batch: int) -> list[tuple[GemmShape, int]]:
    """The distinct shapes with their layer counts, most frequent first."""
    counts = Counter(layer_shapes(unet, resolution, batch).values())
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].kind, -kv[0].macs))
