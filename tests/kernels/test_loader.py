"""The package imports and reports what is there without any build."""

import torch

import quant.kernels as kernels
from quant.kernels import ops


def test_ops_defined_with_reference():
    for name in ops.SCHEMAS:
        assert hasattr(torch.ops.mixdq, name)


def test_status_without_cuda_build():
    status = kernels.load_extension()
    if torch.version.cuda is None:
        assert not status.loaded and "without CUDA" in status.reason
        assert not kernels.is_available()
    text = kernels.describe()
    assert text.startswith("mixdq kernels: ")
    assert "mixdq::w8a8_linear" in text
    if not kernels.is_available():
        assert "not available" in text and "extension: " in text


def test_meta_shapes():
    meta = torch.device("meta")
    x = torch.empty(2, 7, 40, device=meta)
    assert torch.ops.mixdq.quantize_act(x, 0.1, 0, 8, 16).shape == (2, 7, 48)
    xq = torch.empty(2, 9, 11, 32, dtype=torch.int8, device=meta)
    w = torch.empty(24, 3, 3, 32, dtype=torch.int8, device=meta)
    v = torch.empty(24, device=meta)
    y = torch.ops.mixdq.w8a8_conv2d(xq, w, v.int(), v.int(), v, 0.1, 0, None, [2, 2], [1, 1],
                                    [1, 1], torch.float16)
    assert y.shape == (2, 5, 6, 24) and y.dtype == torch.float16
