import numpy as np
import pytest
from PIL import Image

from quant.utils.distributed import Shard
from quant.bench.generation import (GenerationSettings, generate_images, image_path,
                                    missing_images, select_prompts, shard_batches)
from quant.errors import MixDQError


class _Interrupt:
    """A UNet forward hook that stops generation (like Ctrl-C) on the call after ``calls``."""

    def __init__(self, unet, calls: int):
        self.left = calls
        self.handle = unet.register_forward_hook(self)

    def __call__(self, module, args, output):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("batch_size", [1, 2])
def test_interrupted_generation_resumes_to_the_same_bytes(tiny_pipe, coco_prompts, tmp_path,
                                                          batch_size):
    prompts = coco_prompts[:5]
    settings = GenerationSettings(batch_size=batch_size, seed=7)
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    assert generate_images(lambda: tiny_pipe, prompts, clean, settings) == 5

    with _Interrupt(tiny_pipe.unet, calls=1), pytest.raises(KeyboardInterrupt):
        generate_images(lambda: tiny_pipe, prompts, resumed, settings)
    done = len(_files(resumed))
    assert done == batch_size  # the first call's images were written before the interrupt
    assert not list(resumed.glob(".*.tmp"))  # no half-written files

    assert generate_images(lambda: tiny_pipe, prompts, resumed, settings) == 5 - done
    assert _files(resumed) == _files(clean)
    assert len(set(_files(clean).values())) == 5  # distinct images: seeds differ per prompt


def test_complete_folder_does_not_load_the_pipeline(tiny_pipe, coco_prompts, tmp_path):
    settings = GenerationSettings()
    generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path, settings)

    def must_not_load():
        raise AssertionError("pipeline loaded although every image exists")

    assert generate_images(must_not_load, coco_prompts[:2], tmp_path, settings) == 0
    assert generate_images(must_not_load, coco_prompts[:1], tmp_path, settings) == 0


def test_rerun_with_other_settings_or_prompts_is_refused(tiny_pipe, coco_prompts, tmp_path):
    generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path, GenerationSettings(seed=1),
                    source={"model": "tiny"})
    with pytest.raises(MixDQError, match="other settings or model"):
        generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path,
                        GenerationSettings(seed=2), source={"model": "tiny"})
    with pytest.raises(MixDQError, match="other settings or model"):
        generate_images(lambda: tiny_pipe, coco_prompts[:2], tmp_path,
                        GenerationSettings(seed=1), source={"model": "other"})
    with pytest.raises(MixDQError, match="other prompts"):
        generate_images(lambda: tiny_pipe, coco_prompts[2:4], tmp_path,
                        GenerationSettings(seed=1), source={"model": "tiny"})
    # more prompts with the same prefix extend the set
    assert generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path,
                           GenerationSettings(seed=1), source={"model": "tiny"}) == 1


def test_variants_share_noise(tiny_pipe, coco_prompts, tmp_path):
    """Image i depends on prompt i and seed + i only, not on which other prompts are run."""
    settings = GenerationSettings(seed=3)
    generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path / "a", settings)
    generate_images(lambda: tiny_pipe, coco_prompts[:3], tmp_path / "b",
                    GenerationSettings(seed=3, batch_size=3))
    for i in range(3):
        a, b = image_path(tmp_path / "a", i), image_path(tmp_path / "b", i)
        diff = np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int))
        assert diff.max() <= 1  # batched math may differ in the last bit


@pytest.mark.parametrize("n,batch,world", [(10, 1, 3), (10, 4, 2), (3, 2, 4)])
def test_shards_partition_the_indices(n, batch, world):
    shards = [shard_batches(n, batch, Shard(r, world)) for r in range(world)]
    flat = [i for batches in shards for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    if batch == 1:
        for r, batches in enumerate(shards):
            assert all(i % world == r for b in batches for i in b)


def test_missing_images_of_a_shard(tmp_path):
    import json

    from quant.utils.io import file_digest
    records = {}
    for i in (0, 3):
        Image.new("RGB", (4, 4)).save(image_path(tmp_path, i))
        path = image_path(tmp_path, i)
        records[path.name] = {"bytes": path.stat().st_size, "sha256": file_digest(path),
                              "seconds": 0.5}
    Image.new("RGB", (4, 4)).save(image_path(tmp_path, 4))  # on disk, never recorded
    (tmp_path / "images.json").write_text(json.dumps(records))
    assert missing_images(tmp_path, 6) == [1, 2, 4, 5]
    assert missing_images(tmp_path, 6, Shard(1, 2)) == [1, 5]


def test_inline_prompt_errors():
    with pytest.raises(MixDQError, match="no prompts"):
        select_prompts([], None)
    with pytest.raises(MixDQError, match="non-empty"):
        select_prompts(["a red bus", "  "], None)
    assert select_prompts(["a red bus", "a cat"], 1) == ["a red bus"]
    with pytest.raises(MixDQError, match="asked for 3 prompts but only 2"):
        select_prompts(["a red bus", "a cat"], 3)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(batch_size=0), dict(resolution=30),
                                    dict(guidance=-1.0), dict(guidance=float("nan")),
                                    dict(resolution=100000)])
def test_bad_settings(kwargs):
    with pytest.raises(MixDQError):
        GenerationSettings(**kwargs)


def test_resume_redoes_broken_images_and_counts_all_seconds(tiny_pipe, coco_prompts, tmp_path):
    from quant.bench.generation import generation_seconds, read_records

    prompts = coco_prompts[:4]
    settings = GenerationSettings(batch_size=1, seed=7)
    clean, part = tmp_path / "clean", tmp_path / "part"
    generate_images(lambda: tiny_pipe, prompts, clean, settings)
    with _Interrupt(tiny_pipe.unet, calls=2), pytest.raises(KeyboardInterrupt):
        generate_images(lambda: tiny_pipe, prompts, part, settings)
    first = generation_seconds(part)
    assert sorted(read_records(part)) == ["00000.png", "00001.png"] and first > 0
    image_path(part, 1).write_bytes(b"")  # a 0-byte PNG (disk full, bad copy...)
    (part / ".00002.png.k1ll3d.tmp").write_bytes(b"half")  # a write a kill interrupted
    assert generate_images(lambda: tiny_pipe, prompts, part, settings) == 3
    assert _files(part) == _files(clean)
    assert not list(part.glob(".*"))
    records = read_records(part)
    assert sorted(records) == [f"{i:05d}.png" for i in range(4)]
    # image 0 kept its first-run time: the total covers both runs, not only the resumed part
    assert generation_seconds(part) == pytest.approx(sum(r["seconds"] for r in records.values()))
    assert records["00000.png"]["seconds"] > 0


@pytest.fixture(scope="module")
def tiny_w8a8(tiny_dir, tmp_path_factory):
    """A W8A8 checkpoint of the tiny UNet calibrated on two bundled-style prompts."""
    from quant.bitmap import BitMap
    from quant.calib import CalibrationData, record_calibration
    from quant.checkpoint import save_quantized
    from quant.models import load_fp_pipeline
    from quant.quantize import quantize_unet
    from quant.structure import quantizable_layers

    root = tmp_path_factory.mktemp("w8a8")
    pipe = load_fp_pipeline(str(tiny_dir), device="cpu")
    record_calibration(pipe, ["a red bus", "a cat"], root / "calib", batch_size=2,
                       model_name="tiny", progress=False)
    data = CalibrationData(root / "calib")
    quantize_unet(pipe.unet, BitMap.preset(quantizable_layers(pipe.unet), "W8A8"),
                  data.batches(2), progress=False)
    return save_quantized(pipe.unet, root / "q", base_model=str(tiny_dir))


def test_benchmark_checks_fingerprints_before_generating(tiny_w8a8, tmp_path):
    from quant.bench import (BenchmarkConfig, MetricModels, fp_variant, quantized_variant,
                             run_benchmark)

    config = BenchmarkConfig(out_dir=str(tmp_path), latency=False, clip=False, fid=False,
                             device="cpu")
    # the checkpoint was made from tiny; the reference is the proxy (same layers, other weights)
    variants = [fp_variant("proxy", device="cpu"),
                quantized_variant("proxy", tiny_w8a8, device="cpu", name="w8")]
    with pytest.raises(MixDQError, match="variant w8: checkpoint .* was made from a different "
                                         "UNet .* than the reference fp"):
        run_benchmark(variants, ["a cat", "a dog"], config, models=MetricModels())
    assert not list(tmp_path.rglob("*.png"))  # refused before any image was made


def test_benchmark_reports_are_reproducible(tiny_dir, tiny_w8a8, tmp_path):
    import json

    from quant.bench import (BenchmarkConfig, MetricModels, fp_variant, quantized_variant,
                             run_benchmark)

    reports = []
    for run in ("a", "b"):
        config = BenchmarkConfig(out_dir=str(tmp_path / run), latency=False, clip=False,
                                 fid=False, device="cpu", grid_rows=2)
        variants = [fp_variant(str(tiny_dir), device="cpu"),
                    quantized_variant(str(tiny_dir), tiny_w8a8, device="cpu", name="w8")]
        run_benchmark(variants, ["a cat", "a dog on a beach"], config, models=MetricModels())
        reports.append(tmp_path / run)
    a, b = reports
    for name in ("grid.png", "images/fp/00000.png", "images/w8/00001.png",
                 "images/fp/manifest.json", "images/w8/manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ja, jb = (json.loads((r / "report.json").read_text()) for r in (a, b))
    # the timing fields are the only ones that may differ; everything else is the same, in the
    # same order, apart from the output folder named in the settings and notes
    timing = ("generation_seconds",)
    def strip(j, r):
        return json.loads(json.dumps({k: v for k, v in j.items() if k not in timing})
                          .replace(str(r), "OUT"))
    assert strip(ja, a) == strip(jb, b)
    assert list(ja) == list(jb) and ja["generation_seconds"] > 0


def test_benchmark_resumes_with_its_checkpoint_moved(tiny_dir, tiny_w8a8, tmp_path):
    """The image manifests identify a checkpoint by its content, not by where it lies: the
    same checkpoint copied elsewhere (or the path spelled another way) reuses every image."""
    import dataclasses
    import shutil

    from quant.bench import (BenchmarkConfig, MetricModels, fp_variant, quantized_variant,
                             run_benchmark)

    config = BenchmarkConfig(out_dir=str(tmp_path / "out"), latency=False, clip=False,
                             fid=False, device="cpu", grid_rows=2)
    prompts = ["a cat", "a dog"]
    run_benchmark([fp_variant(str(tiny_dir), device="cpu"),
                   quantized_variant(str(tiny_dir), tiny_w8a8, device="cpu", name="w8")],
                  prompts, config, models=MetricModels())
    images = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.png")}
    moved = shutil.copytree(tiny_w8a8, tmp_path / "elsewhere" / "q")

    def never():
        raise AssertionError("a complete benchmark loads no pipeline")

    variants = [fp_variant(str(tiny_dir), device="cpu"),
                quantized_variant(str(tiny_dir), moved, device="cpu", name="w8")]
    report = run_benchmark([dataclasses.replace(v, load=never) for v in variants], prompts,
                           config, models=MetricModels())
    assert {p: p.read_bytes() for p in (tmp_path / "out").rglob("*.png")} == images
    assert report["variants"][1]["source"]["quantized"] == str(moved.resolve())


def test_grid_labels_fit_their_cells(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from quant.bench.report import grid_label, save_grid

    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(image_path(folder, i))
    prompts = ["a cat " * 200, "Supercalifragilisticexpialidocious" * 4]
    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    save_grid(tmp_path / "grid.png", {"v": folder}, prompts, rows=2)
    fig = figures[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    renderer = FigureCanvasAgg(fig).get_renderer()
    box = fig.bbox
    texts = [t for ax in fig.axes for t in ax.texts]
    assert len(texts) == 2
    for t in texts:
        extent = t.get_window_extent(renderer)
        assert extent.x0 >= box.x0 and extent.x1 <= box.x1, t.get_text()
        assert extent.y0 >= box.y0 and extent.y1 <= box.y1, t.get_text()
    label = grid_label(prompts[0])
    assert len(label.splitlines()) == 8 and label.endswith("...")
    assert all(len(line) <= 26 for line in grid_label(prompts[1]).splitlines())
