"""The acceptance run: every layer of ``tiny`` on 8 calibration prompts, through the CLI."""

import pytest

from quant.cli import main
from quant.sensitivity.results import read_csv, read_protect
from quant.structure import quantizable_layers


@pytest.mark.slow
def test_every_layer_bits_and_target_with_ordered_sqnr(tiny_dir, calib_dir, pipe, tmp_path,
                                                      capsys):
    out = tmp_path / "sens.csv"
    assert main(["sensitivity", "--model", str(tiny_dir), "--calib", str(calib_dir),
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    report = capsys.readouterr().out
    assert "1315 evaluations" in report and "per evaluation" in report
    rows = read_csv(out)
    layers = list(quantizable_layers(pipe.unet))
    assert len(layers) == 263 and len(rows) == 263 * 5
    got = {(r.layer, r.target, r.bits) for r in rows}
    assert got == {(n, t, b) for n in layers for t, bits in (("weight", (2, 4, 8)),
                                                             ("act", (4, 8))) for b in bits}
    sqnr = {(r.layer, r.target, r.bits): r.sqnr_db for r in rows}
    for n in layers:
        assert sqnr[n, "weight", 8] >= sqnr[n, "weight", 4] - 0.1 >= sqnr[n, "weight", 2] - 0.2
        assert sqnr[n, "act", 8] >= sqnr[n, "act", 4] - 0.1
    content = [r for r in rows if r.group == "content"]
    assert len({r.layer for r in content}) == 102 and all(r.ssim is not None for r in content)
    assert all(r.ssim is None for r in rows if r.group == "quality")
    protect = read_protect(out.with_name("sens.protect.txt"))
    # the original's rule, derived from the table: 1% of each group (rounded up) at A8,
    # quality by SQNR (161 layers: 2), content by SSIM (102 layers: 2)
    assert len(protect) == 4 and "conv_in" in protect
    a8 = [r for r in rows if r.target == "act" and r.bits == 8]
    content = sorted((r.ssim, r.layer) for r in a8 if r.group == "content")
    assert protect[2:] == [layer for _, layer in content[:2]]
