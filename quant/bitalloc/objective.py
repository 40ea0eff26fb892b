"""Turning measured sensitivities into what the integer program adds up, and into predictions.

Each layer was measured alone, so the objective must be something that *adds* across layers:

- quality group: the relative noise power ``10^(-sqnr_db / 10)`` (noise over signal at the UNet
  output). Independent perturbations of different layers add their noise powers to first order,
  so the sum predicts the output SQNR of the whole allocation: ``-10 log10(sum)``.
- content group: ``1 - ssim``, the SSIM lost by quantizing that layer alone; the sum is a
  first-order prediction of the SSIM lost together. With ``content_metric='sqnr'`` the content
  group uses the noise power too.

The two groups' losses live on different scales (noise ratios of 1e-3 against SSIM losses of
1e-2), so in the joint program each group's losses are divided by the group's total loss with
every layer at its lowest candidate width ("how bad could this group get"). Both groups then run
from 1 (everything at the fewest bits) toward 0, and a bit spent in either group is worth what it
buys in relative terms. Normalising per layer instead (relative to the layer's own 8-bit loss)
would throw away exactly what the allocation needs - that some layers matter far more than
others.

The split mode (the original's) maximises each group's summed metric, sqnr_db or ssim, as
measured; :meth:`Objective.value` gives those.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Mapping

from .config import AllocConfig
from .table import GROUPS, SensitivityTable


@dataclasses.dataclass
class Prediction:
    """What the sensitivities predict for an allocation of one target (weight or act).

    Attributes:
        loss: the joint program's objective (normalised losses summed; lower is better).
        sqnr_db: UNet-output SQNR predicted from every layer's measured SQNR (noise powers
            summed); ``inf`` when nothing is quantized.
        ssim: ``1 - sum(1 - ssim)`` over the layers whose SSIM was measured at the chosen
            width (the content group, or every layer); ``None`` when there are none.
    """

    loss: float
    sqnr_db: float
    ssim: float | None


class Objective:
    """The losses and metrics of one target's free (not protected) layers.

    Args:
        table: the sensitivity table.
        target: ``weight`` or ``act``.
        config: candidate bits, content metric, normalisation, content weight.
        protected: layers whose activations stay floating point (only for ``act``).
    """

    def __init__(self, table: SensitivityTable, target: str, config: AllocConfig,
                 protected: Iterable[str] = ()):
        protected = set(protected) if target == "act" else set()
        self.table = table
        self.target = target
        self.config = config
        self.layers = [name for name in table.layers if name not in protected]
        self.protected = [name for name in table.layers if name in protected]
        cands = config.candidates(target)
        self.options = {name: cands[table.group(name)] for name in self.layers}
        self.raw = {name: {b: self._raw(name, b) for b in self.options[name]}
                    for name in self.layers}
        self.scale = {}
        for group in GROUPS:
            worst = math.fsum(self.raw[n][self.options[n][0]] for n in self.layers
                              if table.group(n) == group)
            factor = config.content_weight if group == "content" else 1.0
            if config.normalize == "group" and worst > 0:
                factor /= worst
            self.scale[group] = factor

    def cost(self, layer: str, bits: int) -> int:
        """What ``layer`` at ``bits`` adds to the budget: ``size * counted bits``."""
        return self.table.get(layer, self.target).size * self.config.cost_bits(self.target, bits)

    def _raw(self, layer: str, bits: int) -> float:
        m = self.table.get(layer, self.target)
        if m.group == "content" and self.config.content_metric == "ssim":
            return 1.0 - m.ssim[bits]
        return 10.0 ** (-m.sqnr_db[bits] / 10.0)

    def loss(self, layer: str, bits: int) -> float:
        """The joint program's loss of ``layer`` at ``bits`` (normalised, weighted)."""
        return self.raw[layer][bits] * self.scale[self.table.group(layer)]

    def value(self, layer: str, bits: int) -> float:
        """The split program's metric to maximise: sqnr_db, or ssim for content layers."""
        m = self.table.get(layer, self.target)
        if m.group == "content" and self.config.content_metric == "ssim":
            return m.ssim[bits]
        return m.sqnr_db[bits]

    def predict(self, bits: Mapping[str, int | None]) -> Prediction:
        """Predict the metrics of an allocation (``bits`` covers at least the free layers)."""
        loss = math.fsum(self.loss(n, bits[n]) for n in self.layers)
        noise = math.fsum(10.0 ** (-self.table.get(n, self.target).sqnr_db[bits[n]] / 10.0)
                          for n in self.layers)
        sqnr = math.inf if noise == 0 else -10.0 * math.log10(noise)
        lost = [1.0 - self.table.get(n, self.target).ssim[bits[n]] for n in self.layers
                if bits[n] in self.table.get(n, self.target).ssim]
        ssim = 1.0 - math.fsum(lost) if lost else None
        return Prediction(loss, sqnr, ssim)
