"""`mixdq allocate`: bit map out, summary printed, one-line errors."""

import pytest

from quant.bitalloc import AllocConfig, Budget, allocate
from quant.bitmap import BitMap
from quant.cli import main


@pytest.fixture
def sens(make_table, tmp_path):
    table = make_table(3, layers=8, act_bits=(4, 8))
    path = tmp_path / "sens.csv"
    table.write(path)
    return table, path


def test_allocate_writes_the_bit_map(sens, tmp_path, capsys):
    table, path = sens
    protect = tmp_path / "protect.txt"
    protect.write_text(f"# keep in fp16\n{table.layers[1]}\n")
    out = tmp_path / "map.json"
    assert main(["allocate", "--sensitivity", str(path), "--weight-bits", "4.0", "--act-bits",
                 "8", "--protect", str(protect), "--out", str(out), "--pick", "predicted"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("weight: budget 4 average bits -> ")
    assert "weight MB" in lines[0] and "predicted SQNR" in lines[0] and "Optimal in" in lines[0]
    assert lines[1].startswith("act: budget 8 average bits -> ")
    assert lines[-1].startswith(f"wrote {out} (8 layers, 1 activations kept in floating point)")
    bit_map = BitMap.load(out)
    bit_map.validate(table.layers)
    expected = allocate(table, Budget.bits("4"), Budget.bits("8"),
                        protected=[table.layers[1]]).bit_map
    assert bit_map.layers == expected.layers
    assert bit_map[table.layers[1]].a is None
    sizes = {n: table.get(n, "weight").size for n in table.layers}
    # split mode with the original's +-0.02 band (shares as upper bounds when it cannot be met)
    assert sum(sizes[n] * bit_map[n].w for n in table.layers) <= 4.02 * sum(sizes.values())
    assert f"-> {sum(sizes[n] * bit_map[n].w for n in table.layers) / sum(sizes.values()):.6f}" \
        in lines[0]


def test_weight_mb_split_mode_and_candidates(sens, tmp_path, capsys):
    table, path = sens
    out = tmp_path / "map.yaml"
    total = sum(table.get(n, "weight").size for n in table.layers)
    mb = 3.5 * total / 8e6
    assert main(["allocate", "--sensitivity", str(path), "--weight-mb", f"{mb:.6f}",
                 "--act-bits", "6", "--mode", "split", "--content-metric", "sqnr",
                 "--weight-candidates", "quality=2,4,8", "--out", str(out),
                 "--pick", "predicted"]) == 0
    text = capsys.readouterr().out
    assert f"budget {float(f'{mb:.6f}'):g} MB" in text and "split, content share" in text
    bit_map = BitMap.load(out)
    assert sum(table.get(n, "weight").size * bit_map[n].w for n in table.layers) <= mb * 8e6
    config = AllocConfig(mode="split", content_metric="sqnr",
                         weight_candidates={"content": (2, 4, 8), "quality": (2, 4, 8)})
    expected = allocate(table, Budget.megabytes(f"{mb:.6f}"), Budget.bits("6"), config)
    assert bit_map.layers == expected.bit_map.layers


def test_sweep_writes_csv_and_png(sens, tmp_path, capsys):
    _, path = sens
    out = tmp_path / "front.csv"
    assert main(["allocate", "--sensitivity", str(path), "--sweep", "--points", "3",
                 "--out", str(out)]) == 0
    assert out.read_text().count("\n") == 1 + 2 * 3
    assert (tmp_path / "front.png").stat().st_size > 1000
    assert f"wrote {out} and {tmp_path / 'front.png'}" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--weight-bits", "1", "--act-bits", "8", "--pick", "predicted"],
     "weight budget 1 average bits cannot be met: allocations range from "),
    (["--weight-bits", "4", "--act-bits", "3", "--pick", "predicted"],
     "act budget 3 average bits cannot be met"),
    (["--weight-bits", "four", "--act-bits", "8"], "budget 'four' is not a number"),
    ([], "give a budget: weight_bits (or weight_mb) and/or act_bits"),
    (["--weight-bits", "4", "--act-bits", "8", "--weight-candidates", "quality=3,4", "--pick",
      "predicted"],
     r"has no row for candidate 3 bits"),
    (["--weight-bits", "4", "--act-bits", "8", "--act-candidates", "style=4"],
     "unknown group 'style'"),
    (["--weight-bits", "4", "--act-bits", "8", "--protect", "missing.txt"], "no such file"),
    # paper's split mode measures its pick on images: it needs the calibration folder
    (["--weight-bits", "4"], "give the model and the calibration folder (--model, --calib)"),
    (["--weight-bits", "4", "--pick-prompts", "2"], "at least 4 prompts, got 2"),
])
def test_user_errors_are_one_line(sens, tmp_path, capsys, extra, message):
    _, path = sens
    code = main(["allocate", "--sensitivity", str(path), "--out", str(tmp_path / "m.json")]
                + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "m.json").exists()


def test_bad_table_and_out_name(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,group,target,bits,sqnr_db,ssim,size\nconv_in,quality,weight,8,nan,,4\n")
    assert main(["allocate", "--sensitivity", str(bad), "--weight-bits", "4", "--act-bits", "8",
                 "--out", str(tmp_path / "m.json")]) == 2
    assert "line 2: sqnr_db is nan" in capsys.readouterr().err
    assert main(["allocate", "--sensitivity", str(bad), "--weight-bits", "4", "--act-bits", "8",
                 "--out", str(tmp_path / "m.txt")]) == 2
    assert "--out" in capsys.readouterr().err


def test_weight_only_table_gives_float_activations(make_table, tmp_path, capsys):
    table = make_table(5, layers=6)
    table.entries = {k: v for k, v in table.entries.items() if k[1] == "weight"}
    path = tmp_path / "weights.csv"
    table.write(path)
    out = tmp_path / "w4a16.json"
    assert main(["allocate", "--sensitivity", str(path), "--weight-bits", "4",
                 "--out", str(out), "--pick", "predicted"]) == 0
    text = capsys.readouterr().out
    assert "act: not allocated (no --act-bits): every act stays floating point" in text
    bit_map = BitMap.load(out)
    assert {lb.a for lb in bit_map.layers.values()} == {None}
    assert None not in {lb.w for lb in bit_map.layers.values()}
    assert main(["allocate", "--sensitivity", str(path), "--weight-bits", "4", "--act-bits", "8",
                 "--out", str(out), "--pick", "predicted"]) == 2
    assert "has no act rows: it cannot allocate act bits" in capsys.readouterr().err
