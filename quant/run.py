"""``mixdq run``: calibrate -> sensitivity -> allocate -> quantize -> benchmark from one config.

A run config (YAML) fills :class:`RunConfig`. Each stage's options are the long flags of that
stage's own subcommand (``num_prompts: 8`` is ``--num-prompts 8``), so the config can say nothing
the CLI could not, and every stage keeps its own validation, resumption and progress bars.

Layout of ``OUT``::

    calib/                     mixdq calibrate
    calib-sensitivity/         (only if sensitivity.calib asks for a smaller calibration set)
    sensitivity/sens.csv       mixdq sensitivity (+ protect list, heatmap)
    variants/NAME/bitmap.json  mixdq allocate (variants with an `allocate` section)
    variants/NAME/quant/       mixdq quantize
    benchmark/                 mixdq benchmark over the full-precision model and every variant

A stage whose outputs are complete and whose arguments are unchanged is skipped; a stage that was
interrupted is re-run and resumes itself. Changed arguments for a finished stage are an error
rather than a silent overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from .errors import MixDQError
from .utils.io import write_json

STAGE_RECORD = "stage.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass
class Variant:
    """One quantized model: a uniform preset (``quantize: {w_bits, a_bits}``) or an allocation."""

    name: str
    quantize: dict = dataclasses.field(default_factory=dict)
    allocate: dict | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise MixDQError(f"variant name {self.name!r}: use letters, digits, '-', '_', '.'")
        has_uniform = "w_bits" in self.quantize or "a_bits" in self.quantize
        if self.allocate is None and not has_uniform:
            raise MixDQError(f"variant {self.name}: give `allocate:` budgets or "
                             f"`quantize: {{w_bits, a_bits}}`")
        if self.allocate is not None and (has_uniform or "bit_map" in self.quantize):
            raise MixDQError(f"variant {self.name}: `allocate` and uniform bits exclude each other")


@dataclasses.dataclass
class RunConfig:
    """A whole run. Paths inside are relative to the config file's folder."""

    model: str = "stabilityai/sdxl-turbo"
    device: str | None = None
    dtype: str | None = None
    lora: str | None = None
    calibrate: dict = dataclasses.field(default_factory=dict)
    sensitivity: dict = dataclasses.field(default_factory=dict)
    variants: list[Variant] = dataclasses.field(default_factory=list)
    benchmark: dict | None = dataclasses.field(default_factory=dict)
    base_dir: Path = Path(".")

    def __post_init__(self):
        self.variants = [v if isinstance(v, Variant) else Variant(**_mapping(v, "variant"))
                         for v in self.variants]
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise MixDQError(f"variant names repeat: {names}")
        if not self.variants:
            raise MixDQError("the run config has no variants: nothing to quantize")
        if "prompts" not in self.calibrate:
            raise MixDQError("the run config needs calibrate.prompts")

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> "RunConfig":
        """Read a YAML/JSON run config, applying ``key.sub=value`` overrides (values in YAML)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise MixDQError(f"run config {path}: no such file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise MixDQError(f"run config {path}: malformed YAML ({str(e).splitlines()[0]})") from None
        data = _mapping(data, f"run config {path}")
        for item in overrides:
            _override(data, item)
        fields = {f.name for f in dataclasses.fields(cls)} - {"base_dir"}
        unknown = set(data) - fields
        if unknown:
            raise MixDQError(f"run config {path}: unknown keys {sorted(unknown)}; "
                             f"known: {sorted(fields)}")
        try:
            return cls(**data, base_dir=path.resolve().parent)
        except TypeError as e:
            raise MixDQError(f"run config {path}: {e}") from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("base_dir")
        return out


def _mapping(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise MixDQError(f"{what}: expected a mapping, got {type(value).__name__}")
    return value


def _override(data: dict, item: str) -> None:
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key:
        raise MixDQError(f"--set {item}: use KEY=VALUE, e.g. calibrate.num_prompts=64")
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise MixDQError(f"--set {item}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text)


_PATH_KEYS = {"prompts", "real_images", "inception", "clip", "bit_map", "protect", "lora"}


def _flags(options: dict, base_dir: Path) -> list[str]:
    """``{num_prompts: 8, no_bos: true}`` -> ``["--num-prompts", "8", "--no-bos"]``."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
            continue
        values = value if isinstance(value, list) else [value]
        if key in _PATH_KEYS:
            values = [_resolve(v, base_dir) for v in values]
        if key in ("weight_bits", "act_bits") and isinstance(value, list):
            argv += [flag, ",".join(map(str, values))]
        elif key in ("prompt", "quantized"):
            for v in values:
                argv += [flag, str(v)]
        else:
            argv += [flag, *map(str, values)]
    return argv


def _resolve(value: Any, base_dir: Path) -> str:
    text = str(value)
    if text in ("tiny",) or text.startswith("hf:") or Path(text).is_absolute():
        return text
    candidate = base_dir / text
    return str(candidate) if candidate.exists() else text


@dataclasses.dataclass
class Stage:
    """One subcommand invocation, its folder and the files that mean it finished."""

    name: str
    folder: Path
    argv: list[str]
    outputs: list[Path]

    def finished(self) -> bool:
        record = self.folder / STAGE_RECORD
        if not record.is_file() or not all(p.exists() for p in self.outputs):
            return False
        previous = json.loads(record.read_text()).get("argv")
        if previous != self.argv:
            raise MixDQError(f"stage {self.name} in {self.folder} finished with other arguments; "
                             f"delete that folder or use a new --out to redo it")
        return True


def plan(config: RunConfig, out: Path) -> list[Stage]:
    """The stages of a run, in order, with their full argument lists."""
    model = ["--model", _resolve(config.model, config.base_dir)]
    for key in ("device", "dtype", "lora"):
        value = getattr(config, key)
        if value is not None:
            model += [f"--{key}", _resolve(value, config.base_dir) if key == "lora" else value]
    calib = out / "calib"
    stages = [Stage("calibrate", calib,
                    ["calibrate", *model, *_flags(config.calibrate, config.base_dir),
                     "--out", str(calib)], [calib / "manifest.json"])]
    sens_options = dict(config.sensitivity)
    sens_calib = calib
    if "calib" in sens_options:
        sens_calib = out / "calib-sensitivity"
        options = dict(config.calibrate, **_mapping(sens_options.pop("calib"), "sensitivity.calib"))
        stages.append(Stage("calibrate (sensitivity)", sens_calib,
                            ["calibrate", *model, *_flags(options, config.base_dir),
                             "--out", str(sens_calib)], [sens_calib / "manifest.json"]))
    sens_csv = out / "sensitivity" / "sens.csv"
    if any(v.allocate is not None for v in config.variants):
        stages.append(Stage("sensitivity", sens_csv.parent,
                            ["sensitivity", *model, "--calib", str(sens_calib),
                             *_flags(sens_options, config.base_dir), "--out", str(sens_csv)],
                            [sens_csv]))
    quantized = []
    for v in config.variants:
        folder = out / "variants" / v.name
        qflags = _flags(v.quantize, config.base_dir)
        if v.allocate is not None:
            bitmap = folder / "bitmap.json"
            protect = sens_csv.with_name(sens_csv.stem + ".protect.txt")
            options = dict(v.allocate)
            if options.pop("protect", True) is not False:
                options["protect"] = str(protect)
            stages.append(Stage(f"allocate {v.name}", folder,
                                ["allocate", "--sensitivity", str(sens_csv),
                                 *_flags(options, config.base_dir), "--out", str(bitmap)],
                                [bitmap]))
            qflags += ["--bit-map", str(bitmap)]
        qdir = folder / "quant"
        stages.append(Stage(f"quantize {v.name}", folder,
                            ["quantize", *model, "--calib", str(calib), *qflags,
                             "--out", str(qdir)], [qdir / "quant_config.json"]))
        quantized += ["--quantized", f"{v.name}={qdir}"]
    if config.benchmark is not None:
        bench = out / "benchmark"
        stages.append(Stage("benchmark", bench,
                            ["benchmark", *model, *quantized,
                             *_flags(config.benchmark, config.base_dir), "--out", str(bench)],
                            [bench / "report.json"]))
    return _one_record_per_folder(stages)


def _one_record_per_folder(stages: list[Stage]) -> list[Stage]:
    # allocate and quantize of a variant share its folder: give each its own record file
    seen: dict[Path, int] = {}
    for stage in stages:
        n = seen.get(stage.folder, 0)
        seen[stage.folder] = n + 1
        if n:
            stage.folder = stage.folder / f".{stage.argv[0]}"
    return stages


def run(config: RunConfig, out: str | Path, main: Callable[[list[str]], int] | None = None,
        log: Callable[[str], None] = print) -> list[tuple[str, str]]:
    """Run every stage that is not finished yet.

    Args:
        config: the run.
        out: the run's folder.
        main: the subcommand dispatcher (``quant.cli.main``); injectable for tests.
        log: where progress lines go.

    Returns:
        ``(stage name, "skipped" | "ran in N s")`` for every stage.

    Raises:
        MixDQError: a stage failed (its own one-line error is printed by the stage first).
    """
    if main is None:
        from .cli import main
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run_config.json", config.to_dict())
    done = []
    for stage in plan(config, out):
        if stage.finished():
            log(f"[mixdq run] {stage.name}: complete, skipped")
            done.append((stage.name, "skipped"))
            continue
        log(f"[mixdq run] {stage.name}: mixdq {' '.join(stage.argv)}")
        start = time.monotonic()
        status = main(stage.argv)
        if status != 0:
            raise MixDQError(f"stage {stage.name} failed (exit status {status}); fix the cause "
                             f"and rerun: finished stages are kept")
        write_json(stage.folder / STAGE_RECORD, {"argv": stage.argv})
        done.append((stage.name, f"ran in {time.monotonic() - start:.1f} s"))
    return done
