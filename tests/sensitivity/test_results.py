"""The table, the per-rank logs (resume, torn lines) and the derived protect list."""

import math

import pytest

from quant.errors import MixDQError
from quant.sensitivity.results import (COLUMNS, LayerLog, Row, format_csv, format_protect,
                                       protect_list, read_csv, read_logs, read_protect,
                                       write_csv)

LAYERS = ["conv_in", "mid.attn2.to_k", "conv_out"]


def rows_for(layer, group, sqnr):
    return ([Row(layer, group, "weight", b, sqnr + b, None, 100) for b in (8, 2, 4)]
            + [Row(layer, group, "act", b, sqnr + b / 2, 0.5 if group == "content" else None, 10)
               for b in (8, 4)])


def all_rows():
    return (rows_for("conv_out", "quality", 30.0) + rows_for("conv_in", "quality", 1 / 3)
            + rows_for("mid.attn2.to_k", "content", 50.0))


def test_csv_is_canonical_and_round_trips(tmp_path):
    text = format_csv(all_rows(), LAYERS)
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1] == "conv_in,quality,weight,2,2.3333333333333335,,100"
    assert [line.split(",")[0] for line in lines[1:6]] == ["conv_in"] * 5
    assert [tuple(line.split(",")[2:4]) for line in lines[1:6]] == [
        ("weight", "2"), ("weight", "4"), ("weight", "8"), ("act", "4"), ("act", "8")]
    assert format_csv(reversed(all_rows()), LAYERS) == text  # order of measurement is irrelevant
    path = tmp_path / "s.csv"
    write_csv(path, all_rows(), LAYERS)
    back = read_csv(path)
    assert format_csv(back, LAYERS) == text
    assert back[0].sqnr_db == 1 / 3 + 2  # repr keeps every bit
    assert [r.ssim for r in back if r.layer == "mid.attn2.to_k" and r.target == "act"] == [0.5, 0.5]


def test_csv_keeps_infinities_and_rejects_bad_files(tmp_path):
    rows = [Row("conv_in", "quality", "weight", 8, math.inf, None, 1),
            Row("conv_in", "quality", "act", 4, -math.inf, None, 1)]
    path = tmp_path / "s.csv"
    write_csv(path, rows, ["conv_in"])
    assert [r.sqnr_db for r in read_csv(path)] == [math.inf, -math.inf]
    path.write_text("layer,bits\n")
    with pytest.raises(MixDQError, match="not a sensitivity table"):
        read_csv(path)
    path.write_text(",".join(COLUMNS) + "\nconv_in,quality,weight,two,1.0,,5\n")
    with pytest.raises(MixDQError, match="line 2 is malformed"):
        read_csv(path)
    path.write_text(",".join(COLUMNS) + "\nconv_in,quality,bias,2,1.0,,5\n")
    with pytest.raises(MixDQError, match="line 2"):
        read_csv(path)
    with pytest.raises(MixDQError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")


def test_log_survives_a_torn_last_line_and_resumes(tmp_path):
    log = LayerLog(tmp_path / "parts" / "rank-00000.jsonl")
    assert log.read() == {}
    log.append("conv_in", rows_for("conv_in", "quality", 1.0))
    log.append("conv_out", rows_for("conv_out", "quality", 2.0))
    with open(log.path, "ab") as f:  # killed in the middle of the third record
        f.write(b'{"layer":"mid.attn2.to_k","rows":[["mid')
    done = log.read()
    assert list(done) == ["conv_in", "conv_out"]
    assert done["conv_in"] == rows_for("conv_in", "quality", 1.0)
    log.repair()
    assert log.path.read_bytes().endswith(b"]]}\n")
    log.append("mid.attn2.to_k", rows_for("mid.attn2.to_k", "content", 3.0))
    assert list(read_logs(tmp_path / "parts")) == ["conv_in", "conv_out", "mid.attn2.to_k"]


def test_log_rejects_a_damaged_middle_line(tmp_path):
    path = tmp_path / "rank-00001.jsonl"
    log = LayerLog(path)
    log.append("conv_in", rows_for("conv_in", "quality", 1.0))
    path.write_bytes(path.read_bytes() + b"garbage\n")
    log.append("conv_out", rows_for("conv_out", "quality", 2.0))
    with pytest.raises(MixDQError, match="line 2 is damaged"):
        log.read()


def test_protect_list_per_group_at_a8_quality_by_sqnr_content_by_ssim(tmp_path):
    rows = []
    for i in range(374):  # quality: A8 SQNR, the four lowest are q5, q17, q100, q373
        low = {5: 20.0, 17: 21.0, 100: 22.0, 373: 23.0}.get(i, 70.0 + i % 5)
        rows.append(Row(f"q{i}", "quality", "act", 4, 10.0 + i % 3, None, 1))  # A4 ignored
        rows.append(Row(f"q{i}", "quality", "act", 8, low, None, 1))
    for i in range(420):  # content: SSIM decides, not SQNR (the lowest SQNR ones differ)
        ssim = {7: 0.991, 8: 0.992, 300: 0.9925, 301: 0.993, 419: 0.9931}.get(i, 0.9999)
        sqnr = 10.0 if i in (1, 2, 3) else 60.0
        rows.append(Row(f"c{i}", "content", "act", 4, 5.0, 0.5, 1))
        rows.append(Row(f"c{i}", "content", "act", 8, sqnr, ssim, 1))
    names = protect_list(rows, 0.01)
    # ceil(3.74) = 4 quality + ceil(4.2) = 5 content = 9, the original's count on SDXL-Turbo
    assert names == ["q5", "q17", "q100", "q373", "c7", "c8", "c300", "c301", "c419"]
    text = format_protect(names, rows, 0.01)
    assert "A8" in text and "SSIM 0.9910" in text
    path = tmp_path / "p.txt"
    path.write_text(text)
    assert read_protect(path) == names
    with pytest.raises(MixDQError, match="protect rule"):
        protect_list(rows, 0.01, rule="all")


def test_logs_of_all_ranks_merge(tmp_path):
    LayerLog(tmp_path / "rank-00000.jsonl").append("conv_in", rows_for("conv_in", "quality", 1))
    LayerLog(tmp_path / "rank-00003.jsonl").append("conv_out", rows_for("conv_out", "quality", 2))
    assert sorted(read_logs(tmp_path)) == ["conv_in", "conv_out"]


def test_protect_list_is_derived_from_the_lowest_activation_bits(tmp_path):
    rows = []
    for i in range(250):
        rows.append(Row(f"l{i}", "quality", "act", 8, 80.0 - (i % 7), None, 1))
        rows.append(Row(f"l{i}", "quality", "act", 4, 40.0 + (i * 37 % 250) / 10, None, 1))
    names = protect_list(rows, 0.01, rule="global")
    # 1% of 250 layers: the 2 (rounded 2.5 -> 2) lowest SQNRs at A4.
    a4 = sorted((r.sqnr_db, r.layer) for r in rows if r.bits == 4)
    assert names == [layer for _, layer in a4[:len(names)]] and len(names) == 2
    assert protect_list(rows, 0.1, rule="global")[:2] == names
    assert len(protect_list(rows, 0.1, rule="global")) == 25
    assert len(protect_list(rows[:4], 0.01, rule="global")) == 1  # at least one layer
    assert protect_list(rows, 0.01, bits=8, rule="global")[0] in {f"l{i}"
                                                                   for i in range(6, 250, 7)}
    with pytest.raises(MixDQError, match="fraction"):
        protect_list(rows, 0)
    with pytest.raises(MixDQError, match="6 bits"):
        protect_list(rows, 0.01, bits=6)
    path = tmp_path / "s.protect.txt"
    path.write_text(format_protect(names, rows, 0.01, rule="global"))
    text = path.read_text()
    assert text.startswith("# ") and "A4" in text
    assert read_protect(path) == names
