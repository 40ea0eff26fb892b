import json

import pytest

from quant.bitmap import BitMap, LayerBits
from quant.errors import MixDQError

NAMES = ["conv_in", "down_blocks.0.resnets.0.conv1", "mid_block.attentions.0.proj_in"]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    bm = BitMap({NAMES[0]: LayerBits(8, None), NAMES[1]: LayerBits(4, 8),
                 NAMES[2]: LayerBits(2, 6)})
    bm.save(tmp_path / f"map{suffix}")
    back = BitMap.load(tmp_path / f"map{suffix}")
    assert back.layers == bm.layers
    back.validate(NAMES)


def test_presets():
    bm = BitMap.preset(NAMES, "W4A8")
    assert {b for b in bm.layers.values()} == {LayerBits(4, 8)}
    assert BitMap.preset(NAMES, "w8a16")[NAMES[0]] == LayerBits(8, None)
    with pytest.raises(MixDQError, match="unknown preset"):
        BitMap.preset(NAMES, "int8")


def test_validation_errors_name_the_layer(tmp_path):
    bm = BitMap.uniform(NAMES[:2], 8, 8)
    with pytest.raises(MixDQError, match="mid_block.attentions.0.proj_in.*missing"):
        bm.validate(NAMES)
    with pytest.raises(MixDQError, match="unknown layer 'conv_in'"):
        bm.validate(NAMES[1:2])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"layers": {"conv_in": {"w": 9, "a": 8}}}))
    with pytest.raises(MixDQError, match="weight bit width 9 for layer conv_in"):
        BitMap.load(path)
    path.write_text(json.dumps({"layers": {"conv_in": {"w": 8, "a": 3}}}))
    with pytest.raises(MixDQError, match="activation bit width 3 for layer conv_in"):
        BitMap.load(path)
    path.write_text("{not json")
    with pytest.raises(MixDQError, match="malformed"):
        BitMap.load(path)
    with pytest.raises(MixDQError, match="no such file"):
        BitMap.load(tmp_path / "absent.json")


def test_unknown_version_format_and_encoding_are_refused(tmp_path):
    import json as _json

    from quant.bitmap import BitMap
    from quant.errors import MixDQError

    good = {"format": "mixdq-bitmap", "version": 1, "layers": {"conv_in": {"w": 8, "a": 8}}}
    (tmp_path / "v99.json").write_text(_json.dumps({**good, "version": 99}))
    with pytest.raises(MixDQError, match="bit map version 99 is not supported"):
        BitMap.load(tmp_path / "v99.json")
    (tmp_path / "fmt.json").write_text(_json.dumps({**good, "format": "other"}))
    with pytest.raises(MixDQError, match="format 'other' is not 'mixdq-bitmap'"):
        BitMap.load(tmp_path / "fmt.json")
    (tmp_path / "latin1.json").write_bytes("{\"layers\": {\"caf\xe9\": 1}}".encode("latin-1"))
    with pytest.raises(MixDQError, match="not UTF-8 text"):
        BitMap.load(tmp_path / "latin1.json")
    (tmp_path / "ok.json").write_text(_json.dumps(good))
    assert BitMap.load(tmp_path / "ok.json")["conv_in"].w == 8
