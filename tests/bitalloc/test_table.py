"""Reading and checking the sensitivity CSV and the protect list."""

import pytest

from quant.bitalloc.table import SensitivityTable, read_protect_list
from quant.errors import MixDQError

HEADER = "layer,group,target,bits,sqnr_db,ssim,size\n"
GOOD = (
    "a.attn2.to_k,content,weight,4,20.5,0.91,4096\n"
    "a.attn2.to_k,content,weight,8,45.0,0.99,4096\n"
    "a.attn2.to_k,content,act,8,40.0,,77\n"
    "conv_in,quality,weight,8,50,,432\n"
    "conv_in,quality,act,8,30,,16384\n"
)


def parse(body, header=HEADER):
    return SensitivityTable.parse(header + body, source="S.csv")


def test_reads_rows_in_order_and_round_trips(tmp_path):
    t = parse(GOOD)
    assert t.layers == ["a.attn2.to_k", "conv_in"]
    m = t.get("a.attn2.to_k", "weight")
    assert (m.group, m.size, m.sqnr_db, m.ssim) == ("content", 4096, {4: 20.5, 8: 45.0},
                                                   {4: 0.91, 8: 0.99})
    assert t.get("a.attn2.to_k", "act").ssim == {}
    t.write(tmp_path / "s.csv")
    back = SensitivityTable.read(tmp_path / "s.csv")
    assert back.layers == t.layers and back.entries == t.entries
    assert back.source == str(tmp_path / "s.csv")


def test_ssim_rounding_is_clipped():
    t = parse("conv_in,quality,weight,8,50,1.0000001192092896,432\n"
              "conv_in,quality,act,8,50,-1.00001,432\n")
    assert t.get("conv_in", "weight").ssim == {8: 1.0}
    assert t.get("conv_in", "act").ssim == {8: -1.0}


def test_extra_columns_are_ignored():
    body = "".join(line + ",x\n" for line in GOOD.splitlines())
    t = parse(body, header=HEADER.strip() + ",note\n")
    assert t.get("conv_in", "act").size == 16384


@pytest.mark.parametrize("body, message", [
    ("conv_in,quality,weight,8,abc,,432\n", r"S.csv line 2: sqnr_db 'abc' is not a number"),
    ("conv_in,quality,weight,8,nan,,432\n", r"line 2: sqnr_db is nan; a finite number"),
    ("conv_in,quality,weight,8,50,inf,432\n", r"line 2: ssim is inf"),
    ("conv_in,quality,weight,8,50,1.5,432\n", r"ssim 1.5 is outside"),
    ("conv_in,quality,bias,8,50,,432\n", r"line 2: unknown target 'bias'"),
    ("conv_in,style,weight,8,50,,432\n", r"unknown group 'style'"),
    ("conv_in,quality,weight,8.0,50,,432\n", r"bits '8.0' is not an integer"),
    ("conv_in,quality,weight,9,50,,432\n", r"unsupported weight bit width 9 for layer conv_in"),
    ("conv_in,quality,act,2,50,,432\n", r"unsupported act bit width 2"),
    ("conv_in,quality,weight,8,50,,0\n", r"size must be positive"),
    ("conv_in,quality,weight,8,50,,\n", r"size '' is not an integer"),
    (",quality,weight,8,50,,3\n", r"line 2: empty layer name"),
    ("conv_in,quality,weight,8,50\n", r"line 2: ssim|size"),
    ("conv_in,quality,weight,8,50,,432\nconv_in,quality,weight,8,51,,432\n",
     r"line 3: duplicate row for layer conv_in, weight, 8 bits"),
    ("conv_in,quality,weight,8,50,,432\nconv_in,quality,weight,4,51,,433\n",
     r"line 3: layer conv_in \(weight\) has size 433 here but 432"),
    ("conv_in,quality,weight,8,50,,432\nconv_in,content,act,8,51,,4\n",
     r"line 3: layer conv_in is in group content here but quality"),
    ("conv_in,quality,weight,8,50,,432\nconv_in,quality,act,8,50,,4\n"
     "conv_out,quality,weight,8,50,,432\n", r"layer conv_out has weight rows but no act rows"),
    ("", r"S.csv: no rows"),
])
def test_bad_rows_are_one_line_errors(body, message):
    with pytest.raises(MixDQError, match=message) as exc:
        parse(body)
    assert "\n" not in str(exc.value)


def test_single_target_table():
    t = parse("conv_in,quality,weight,8,50,,432\nconv_out,quality,weight,8,40,,432\n")
    assert t.targets == ("weight",) and t.group("conv_out") == "quality"
    assert [r["target"] for r in t.rows()] == ["weight", "weight"]
    with pytest.raises(MixDQError, match="S.csv has no act rows"):
        t.check_candidates("act", {"content": (8,), "quality": (8,)})


def test_missing_column_and_file(tmp_path):
    with pytest.raises(MixDQError, match=r"missing column\(s\) ssim, size"):
        parse(GOOD, header="layer,group,target,bits,sqnr_db\n")
    with pytest.raises(MixDQError, match="no such file"):
        SensitivityTable.read(tmp_path / "none.csv")


def test_missing_candidate_names_the_layer():
    t = parse(GOOD)
    t.check_candidates("weight", {"content": (4, 8), "quality": (8,)}, "ssim")
    with pytest.raises(MixDQError, match=r"S.csv: layer conv_in \(weight, quality\) has no row "
                                         r"for candidate 4 bits \(has 8\)"):
        t.check_candidates("weight", {"content": (4, 8), "quality": (4, 8)})
    with pytest.raises(MixDQError, match=r"layer a.attn2.to_k \(act, content\) has no ssim at 8"):
        t.check_candidates("act", {"content": (8,), "quality": (8,)}, "ssim")
    t.check_candidates("act", {"content": (8,), "quality": (8,)}, "sqnr")


def test_protect_list(tmp_path):
    path = tmp_path / "protect.txt"
    path.write_text("# most sensitive activations\nconv_in  # first conv\n\nconv_in\n")
    assert read_protect_list(path, ["a", "conv_in"]) == ["conv_in"]
    path.write_text("conv_in\nconv_out\n")
    with pytest.raises(MixDQError, match=r"line 2: layer 'conv_out' is not in the sensitivity"):
        read_protect_list(path, ["conv_in"])
    with pytest.raises(MixDQError, match="no such file"):
        read_protect_list(tmp_path / "nope.txt", [])


def test_infinite_sqnr_from_the_sensitivity_stage_is_clamped():
    # +inf: quantizing the layer changed nothing; -inf: the output went non-finite
    body = GOOD.replace("conv_in,quality,weight,8,50,", "conv_in,quality,weight,8,inf,")
    body = body.replace("conv_in,quality,act,8,30,", "conv_in,quality,act,8,-inf,")
    t = parse(body)
    assert t.get("conv_in", "weight").sqnr_db[8] == 200.0
    assert t.get("conv_in", "act").sqnr_db[8] == -100.0


def test_missing_layers_and_encodings_are_refused(tmp_path):
    t = parse(GOOD)
    t.check_layers(["a.attn2.to_k", "conv_in"])
    with pytest.raises(MixDQError, match=r"S.csv: layer conv_out of the model is missing "
                                         r"\(1 of 3 layers missing\)"):
        t.check_layers(["a.attn2.to_k", "conv_in", "conv_out"], source="S.csv")
    (tmp_path / "s.csv").write_bytes((HEADER + "caf\xe9,quality,weight,8,50,,432\n")
                                     .encode("latin-1"))
    with pytest.raises(MixDQError, match="not UTF-8 text"):
        SensitivityTable.read(tmp_path / "s.csv")
    (tmp_path / "p.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(MixDQError, match="protect list .* not UTF-8 text"):
        read_protect_list(tmp_path / "p.txt", ["conv_in"])
