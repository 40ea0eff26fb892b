"""Every tiny pipeline family through `mixdq run`, end to end (the presets' settings:
``tests/test_family_options.py``)."""

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sd21", "sdxl"])
def test_mixdq_run_on_each_tiny_family(family, tmp_path, monkeypatch):
    """Every stage of the family's config, made smaller: 4 calibration prompts, sensitivity on
    one prompt with SQNR only (the allocation uses SQNR as its content metric), 2 benchmark
    prompts. The configs as shipped also measure SSIM (5-10 minutes each on a CPU)."""
    import yaml

    from quant.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = yaml.safe_load((CONFIGS / f"tiny_{family}.yaml").read_text())
    prompts = str(CONFIGS / data["calibrate"]["prompts"])
    data["calibrate"].update(prompts=prompts, num_prompts=4)
    data["sensitivity"] = {"calib": {"num_prompts": 1}, "ssim": "none"}
    for variant in data["variants"]:
        if "allocate" in variant:
            variant["allocate"]["content_metric"] = "sqnr"
    data["benchmark"].update(prompts=prompts, num_prompts=2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / family
    assert main(["run", "--config", str(config), "--out", str(out)]) == 0
    report = json.loads((out / "benchmark" / "report.json").read_text())
    assert "mixdq-w4a8" in json.dumps(report)
    w8a8 = json.loads((out / "variants" / "w8a8" / "quant" / "quant_config.json").read_text())
    sqnr = _find(w8a8, "sqnr_db")
    # 97-148 s each on a shared CPU. Measured with the shipped configs (8 prompts): W8A8
    # 20.9 (sd15, 4 steps), 21.2 (sd21),
    # 21.0 dB (sdxl, guidance 3).
    assert sqnr > 15.0, sqnr


def _find(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for value in obj.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
