import csv
import json

from pathlib import Path

import pytest

from quant.calib.prompts import load_prompts, read_prompts
from quant.errors import MixDQError

BUNDLED_PROMPTS = (Path(__file__).resolve().parents[2] / "configs" / "prompts"
                   / "coco2017_val_first1024.txt")


def first_captions(path, n):
    """The first caption of each of the first images in the ``images`` list, read independently
    of the loader."""
    with open(path, encoding="utf-8") as f:
        coco = json.load(f)
    captions = []
    for image in coco["images"]:
        caption = next(a["caption"] for a in coco["annotations"] if a["image_id"] == image["id"])
        captions.append(" ".join(caption.split()))
        if len(captions) == n:
            return captions


def annotation_order_captions(path, n):
    """The first caption per image, images in order of first appearance in ``annotations``."""
    with open(path, encoding="utf-8") as f:
        coco = json.load(f)
    seen, captions = set(), []
    for ann in coco["annotations"]:
        if ann["image_id"] not in seen:
            seen.add(ann["image_id"])
            captions.append(" ".join(ann["caption"].split()))
            if len(captions) == n:
                return captions


def test_coco_json_first_caption_of_each_image(data_dir):
    path = f"{data_dir}/coco_captions_val2017.json"
    prompts = load_prompts(path, num_prompts=8)
    assert prompts == annotation_order_captions(path, 8)
    assert len(set(prompts)) == 8
    assert load_prompts(path, num_prompts=8, coco_order="images") == first_captions(path, 8)


def test_bundled_prompts_are_the_coco_json_in_annotation_order(data_dir):
    """The bundled file is what the library reads from the COCO JSON (first 1,024 prompts);
    with ``../shared`` present, also against the real captions_val2017.json."""
    with open(BUNDLED_PROMPTS, encoding="utf-8") as f:
        bundled = f.read().splitlines()
    got = read_prompts(f"{data_dir}/coco_captions_val2017.json", num_prompts=len(bundled))
    assert got.prompts == bundled
    by_images = read_prompts(f"{data_dir}/coco_captions_val2017.json",
                             num_prompts=len(bundled), coco_order="images").prompts
    assert by_images != bundled


def test_coco_annotation_order_differs_from_images_list(tmp_path):
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}],
        "annotations": [{"image_id": 3, "caption": "three a"},
                        {"image_id": 1, "caption": "one a"},
                        {"image_id": 3, "caption": "three b"},
                        {"image_id": 2, "caption": "two a"},
                        {"image_id": 1, "caption": "one b"}]}))
    got = read_prompts(str(coco))
    assert got.prompts == ["three a", "one a", "two a"] and got.empty == [3]
    assert load_prompts(str(coco), num_prompts=2) == ["three a", "one a"]
    assert load_prompts(str(coco), coco_order="images") == ["one a", "two a", "three a"]
    with pytest.raises(MixDQError, match="coco_order"):
        read_prompts(str(coco), coco_order="file")


def test_coco30k_csv_text_column(data_dir):
    path = f"{data_dir}/coco30k_val2014_prompts.csv"
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r["text"] for _, r in zip(range(5), csv.DictReader(f))]
    got = read_prompts(path, num_prompts=5)
    assert got.kind == "csv" and got.scanned == 5
    assert got.prompts == [" ".join(r.split()) for r in rows]


def test_all_coco_captions_read_and_deduplicated(data_dir):
    path = f"{data_dir}/coco_captions_val2017.json"
    with open(path, encoding="utf-8") as f:
        images = len(json.load(f)["images"])
    got = read_prompts(path)
    assert got.scanned == images and images >= 1000  # every image, one caption each
    assert len(got.prompts) + len(got.empty) + len(got.duplicates) == images
    assert len(set(got.prompts)) == len(got.prompts)


def test_text_file_reports_empty_and_duplicate_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a dog\n\n  a   cat \na dog\n   \na bird\n", encoding="utf-8")
    got = read_prompts(str(path))
    assert got.prompts == ["a dog", "a cat", "a bird"]
    assert got.empty == [1, 4] and got.duplicates == [3]
    assert "2 empty (first at entry 1)" in got.summary()
    assert "1 duplicate (first at entry 3)" in got.summary()
    assert load_prompts(str(path), num_prompts=2) == ["a dog", "a cat"]


def test_tsv_with_named_column_and_coco_image_without_caption(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("id\tcaption\n1\tone, with a comma\n2\ttwo\n", encoding="utf-8")
    assert load_prompts(str(tsv), column="caption") == ["one, with a comma", "two"]
    coco = tmp_path / "c.json"
    coco.write_text(json.dumps({
        "images": [{"id": 5}, {"id": 3}, {"id": 9}],
        "annotations": [{"image_id": 3, "caption": "three a"}, {"image_id": 5, "caption": "five"},
                        {"image_id": 3, "caption": "three b"}]}))
    got = read_prompts(str(coco))
    assert got.prompts == ["three a", "five"] and got.empty == [2]
    got = read_prompts(str(coco), coco_order="images")
    assert got.prompts == ["five", "three a"] and got.empty == [2]


def test_shuffle_is_a_seeded_sample(data_dir):
    path = f"{data_dir}/coco30k_val2014_prompts.csv"
    a = load_prompts(path, num_prompts=16, shuffle=True, seed=1)
    assert a == load_prompts(path, num_prompts=16, shuffle=True, seed=1)
    assert a != load_prompts(path, num_prompts=16, shuffle=True, seed=2)
    assert a != load_prompts(path, num_prompts=16)
    assert len(set(a)) == 16


@pytest.mark.parametrize("content, suffix, kwargs, match", [
    (None, ".json", {}, "does not exist"),
    ("x", ".bin", {}, "unknown prompt file format '.bin'"),
    ("{\"images\": []", ".json", {}, "not valid JSON"),
    ("[\"a\", \"b\"]", ".json", {}, "not a COCO caption file"),
    ("file_name,caption\na.jpg,a dog\n", ".csv", {},
     "no column 'text' \\(columns: file_name, caption\\)"),
    ("", ".csv", {}, "empty file"),
    ("a dog\n", ".txt", {"num_prompts": 0}, "--num-prompts must be a positive integer, got 0"),
    ("a dog\na cat\na dog\n", ".txt", {"num_prompts": 3}, "2 usable prompts, fewer than"),
    ("\n \n", ".txt", {}, "no usable prompts"),
    (b"\xff\xfe\x00\x01", ".txt", {}, "not UTF-8"),
])
def test_bad_sources_are_one_line_errors(tmp_path, content, suffix, kwargs, match):
    path = tmp_path / f"p{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(MixDQError, match=match) as exc:
        load_prompts(str(path), **kwargs)
    assert "\n" not in str(exc.value)


def test_plain_folder_is_not_a_dataset(tmp_path):
    with pytest.raises(MixDQError, match="not one saved with datasets"):
        load_prompts(str(tmp_path))


def test_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"caption": ["a dog", "", "a cat", "a dog", "a fish"],
                                       "n": [1, 2, 3, 4, 5]})
    data.save_to_disk(str(tmp_path / "ds"))
    got = read_prompts(str(tmp_path / "ds"), column="caption")
    assert got.kind == "datasets" and got.prompts == ["a dog", "a cat", "a fish"]
    assert got.empty == [1] and got.duplicates == [3]
    with pytest.raises(MixDQError, match="no column 'text' \\(columns: caption, n\\)"):
        load_prompts(str(tmp_path / "ds"))
    splits = datasets.DatasetDict({"train": data, "validation": data.select([4, 2])})
    splits.save_to_disk(str(tmp_path / "dd"))
    assert load_prompts(str(tmp_path / "dd"), column="caption", split="validation") == [
        "a fish", "a cat"]
    assert load_prompts(str(tmp_path / "dd"), column="caption", num_prompts=1) == ["a dog"]
