import pytest

from quant.utils.io import atomic_path, write_json, write_text


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "f.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_folder_replaces_whole(tmp_path):
    target = tmp_path / "d"
    for content in ("a", "b"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text(content)
    assert (target / "x").read_text() == "b"
    write_json(tmp_path / "j.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "j.json").read_text().startswith('{\n  "a"')
