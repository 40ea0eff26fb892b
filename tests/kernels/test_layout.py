"""The kernels' weight layouts: int4 packing, channels-last conv weights, weight sums."""

import pytest
import torch

from quant.errors import MixDQError
from quant.kernels.layout import (conv_weight_nhwc, pack_int4, pad_last, round_up, tap_sums,
                                  unpack_int4, weight_sums)
from quant.packing import pack, unpack


@pytest.mark.parametrize("k", [1, 16, 31, 32, 33, 80, 100])
def test_int4_round_trip(k):
    q = torch.randint(-8, 8, (5, k), dtype=torch.int8)
    p = pack_int4(q)
    assert p.dtype == torch.uint8 and p.shape == (5, round_up(k, 32) // 2)
    assert torch.equal(unpack_int4(p, k), q)


def test_int4_kernel_layout_bytes():
    # byte j of each 32-value group: k = j in the low nibble, k = 16 + j in the high nibble
    q = torch.zeros(1, 64, dtype=torch.int8)
    q[0, 3] = -1       # group 0, byte 3, low nibble 0xF
    q[0, 16 + 5] = 7   # group 0, byte 5, high nibble 0x7
    q[0, 32 + 16] = -8  # group 1, byte 0, high nibble 0x8
    p = pack_int4(q)[0].tolist()
    assert p[3] == 0x0F and p[5] == 0x70 and p[16] == 0x80
    assert sum(1 for b in p if b) == 3


def test_int4_from_checkpoint_layout():
    q = torch.randint(-8, 8, (7, 90), dtype=torch.int8)
    stored = pack(q, 4)  # quant.packing: what checkpoints hold
    assert torch.equal(unpack_int4(pack_int4(unpack(stored, 4, 90)), 90), q)


def test_int4_range_checked():
    with pytest.raises(MixDQError, match="int4 range"):
        pack_int4(torch.tensor([[8]], dtype=torch.int8))


def test_conv_layout_and_sums():
    q = torch.randint(-128, 128, (6, 5, 3, 3), dtype=torch.int8)
    nhwc = conv_weight_nhwc(q)
    assert nhwc.shape == (6, 3, 3, 5) and nhwc.is_contiguous()
    assert torch.equal(nhwc[:, 1, 2, :], q[:, :, 1, 2])
    ts = tap_sums(nhwc)
    assert ts.dtype == torch.int32 and ts.shape == (6, 9)
    assert torch.equal(ts[:, 1 * 3 + 2], q[:, :, 1, 2].sum(1).int())
    assert torch.equal(weight_sums(q), q.reshape(6, -1).sum(1).int())
    assert torch.equal(ts.sum(1), weight_sums(q))
    padded = pad_last(nhwc, 16)
    assert padded.shape == (6, 3, 3, 16) and torch.equal(padded[..., :5], nhwc)
    assert not padded[..., 5:].any()
