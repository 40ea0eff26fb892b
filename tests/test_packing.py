import pytest
import torch

from quant.errors import MixDQError
from quant.packing import pack, unpack


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("k", [1, 7, 8, 33])
def test_round_trip_exact(bits, k):
    g = torch.Generator().manual_seed(bits * 100 + k)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    q = torch.randint(lo, hi, (5, k), generator=g, dtype=torch.int8)
    packed = pack(q, bits)
    per = {2: 4, 4: 2}.get(bits, 1)
    assert packed.shape == (5, -(-k // per))
    assert torch.equal(unpack(packed, bits, k), q)


def test_nibble_order():
    q = torch.tensor([[1, -1, -8, 7]], dtype=torch.int8)
    assert pack(q, 4).tolist() == [[0xF1, 0x78]]
    assert pack(torch.tensor([[1, -2, 0, -1]]), 2).tolist() == [[0b11001001]]


def test_out_of_range_is_an_error():
    with pytest.raises(MixDQError, match="out of range for 4-bit"):
        pack(torch.tensor([[8]]), 4)
