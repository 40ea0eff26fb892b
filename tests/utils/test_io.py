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


def test_killed_writes_are_cleaned_by_the_next_write(tmp_path):
    from quant.utils.io import clean_stale_temps

    (tmp_path / ".f.txt.abc123.tmp").write_text("half")      # a killed write of f.txt
    (tmp_path / ".d.xyz.tmp").mkdir()                          # a killed write of folder d
    (tmp_path / ".g.txt.abc.tmp").write_text("another target's temporary")
    write_text(tmp_path / "f.txt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.xyz.tmp", ".g.txt.abc.tmp",
                                                          "f.txt"]
    assert clean_stale_temps(tmp_path) == [tmp_path / ".d.xyz.tmp", tmp_path / ".g.txt.abc.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    assert clean_stale_temps(tmp_path / "missing") == []


def test_write_failure_names_the_file_and_keeps_the_old_one(tmp_path):
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource
        from quant.errors import MixDQError
        from quant.utils.io import write_bytes
        write_bytes({str(tmp_path / 'big.bin')!r}, b"old")
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # a file-size limit
        try:
            write_bytes({str(tmp_path / 'big.bin')!r}, b"x" * 5000)
        except MixDQError as e:
            print("ERROR", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ERROR could not write {tmp_path / 'big.bin'}: File too large")
    assert "previous version (if any) is kept" in out.stdout
    assert (tmp_path / "big.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]
