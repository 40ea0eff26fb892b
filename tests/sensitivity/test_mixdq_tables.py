"""The original MixDQ's YAML sensitivity tables, converted into our table and allocated."""

import importlib.util
from pathlib import Path

import pytest

from quant.bitalloc import AllocConfig, Budget, SensitivityTable, allocate
from quant.errors import MixDQError
from quant.sensitivity.mixdq_tables import read_mixdq_tables

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_mixdq_tables.py"

LAYERS = {  # layer: (weight params, act elements)
    "conv_in": (1152, 16384),
    "down_blocks.0.resnets.0.conv1": (36864, 131072),
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (131072, 157696),
    "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2": (409600, 655360),
    "up_blocks.0.resnets.0.conv_shortcut": (163840, 327680),
    "conv_out": (1152, 65536),
}
CONTENT = [n for n in LAYERS if "attn2" in n or ".ff." in n]


def write_tables(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for t, col in (("weight", 0), ("act", 1)):
        total = sum(v[col] for v in LAYERS.values())
        sqnr = [f"model.{n}: [{5.0 + i}, {20.0 + 2 * i}, {50.0 + 3 * i}]"
                for i, n in enumerate(LAYERS)]
        ssim = [f"model.{n}: [0.{50 + i}, 0.{90 + i}, 0.99{i}]" for i, n in enumerate(CONTENT)]
        ratio = [f"model.{n}: {v[col] / total!r}" for n, v in LAYERS.items()]
        files[t] = total
        (folder / f"{t}_sqnr.yaml").write_text("\n".join(sqnr) + "\n")
        (folder / f"{t}_ssim.yaml").write_text("\n".join(ssim) + "\n")
        (folder / f"{t}_size_ratio.yaml").write_text("\n".join(ratio) + "\n")
    return files


def test_original_tables_convert_to_our_rows(tmp_path):
    totals = write_tables(tmp_path / "t")
    rows, layers = read_mixdq_tables(tmp_path / "t", weight_total=totals["weight"],
                                     act_total=totals["act"])
    assert layers == list(LAYERS)
    weight = [r for r in rows if r.target == "weight"]
    act = [r for r in rows if r.target == "act"]
    assert len(weight) == 3 * 6 and len(act) == 2 * 6  # A2 dropped: the allocator never uses it
    by = {(r.layer, r.target, r.bits): r for r in rows}
    r = by["down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", "weight", 4]
    assert (r.group, r.sqnr_db, r.ssim, r.size) == ("content", 26.0, 0.91, 409600)
    r = by["conv_in", "act", 8]
    assert (r.group, r.sqnr_db, r.ssim, r.size) == ("quality", 50.0, None, 16384)
    assert {r.size for r in rows if r.layer == "conv_out" and r.target == "act"} == {65536}


def test_script_writes_a_table_the_allocator_reads(tmp_path, capsys):
    totals = write_tables(tmp_path / "t")
    spec = importlib.util.spec_from_file_location("convert", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "sens.csv"
    assert module.main([str(tmp_path / "t"), str(out), "--weight-total", str(totals["weight"]),
                        "--act-total", str(totals["act"])]) == 0
    assert "6 layers" in capsys.readouterr().out
    table = SensitivityTable.read(out)
    assert table.layers == list(LAYERS) and table.get("conv_in", "weight").size == 1152
    protect = (tmp_path / "sens.protect.txt").read_text().split("\n")
    # per group at A8: the lowest-SQNR quality layer and the lowest-SSIM content layer
    assert [n for n in protect if n and not n.startswith("#")] == ["conv_in", CONTENT[0]]
    alloc = allocate(table, Budget.bits("4"), None, AllocConfig(band=None))
    assert set(alloc.bit_map.layers) == set(LAYERS)
    assert module.main([str(tmp_path / "nope"), str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_bad_tables_fail_with_one_line(tmp_path):
    write_tables(tmp_path / "t")
    bad = tmp_path / "t" / "weight_sqnr.yaml"
    bad.write_text(bad.read_text().replace("[5.0, 20.0, 50.0]", "[5.0, 20.0]"))
    with pytest.raises(MixDQError, match="expected a list of 3 values"):
        read_mixdq_tables(tmp_path / "t")
    write_tables(tmp_path / "u")
    (tmp_path / "u" / "act_size_ratio.yaml").unlink()
    with pytest.raises(MixDQError, match="no act size-ratio table"):
        read_mixdq_tables(tmp_path / "u")
    write_tables(tmp_path / "v")
    (tmp_path / "v" / "weight_act_sqnr.yaml").write_text("model.conv_in: [1, 2, 3]\n")
    with pytest.raises(MixDQError, match="cannot tell"):
        read_mixdq_tables(tmp_path / "v")
