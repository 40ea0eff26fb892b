"""Block caching's saving, counted in multiply-accumulates from layer shapes."""

import torch
from torch import nn

from quant.sensitivity.cost import MacCounter, layer_macs, rerun_macs


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=2))
        self.b = nn.Linear(8, 5)

    def forward(self, x):
        y = self.a(x)  # [2, 8, 4, 4]
        return self.b(y.mean((2, 3)))


def test_counted_macs_are_the_shapes_products():
    net = Net()
    with MacCounter(net) as counter:
        net(torch.zeros(2, 3, 6, 6))
        net(torch.zeros(2, 3, 6, 6))  # counted per call: twice
    conv1 = 2 * 8 * 6 * 6 * 3 * 3 * 3     # out elements x in channels x kernel taps
    conv2 = 2 * 8 * 4 * 4 * 4 * 3 * 3     # groups=2: 4 input channels per output
    lin = 2 * 5 * 8
    assert counter.macs == {"a.0": 2 * conv1, "a.1": 2 * conv2, "b": 2 * lin}
    net(torch.zeros(1, 3, 6, 6))
    assert counter.macs["b"] == 2 * lin  # hooks removed on exit
    assert rerun_macs(counter.macs, ("a",)) == 2 * lin
    assert rerun_macs(counter.macs, ("a.0",)) == 2 * (conv2 + lin)
    assert rerun_macs(counter.macs, ()) == sum(counter.macs.values())
    assert layer_macs(nn.Linear(3, 2), torch.zeros(4, 7, 2)) == 4 * 7 * 2 * 3
