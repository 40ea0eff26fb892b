"""``mixdq run``: calibrate -> sensitivity -> allocate -> quantize -> benchmark from one config.

A run config (YAML) fills :class:`RunConfig`: the model (``model``, ``device``, ``dtype``,
``lora``, ``lora_scale``, ``scheduler``: one :class:`~quant.models.ModelSpec` shared by every
stage) and one section per stage whose keys are the fields of that stage's options
(``quant.stages``; the long flags of its subcommand, ``-`` written ``_``). Every section is
turned into typed options when the config is loaded, so a bad key, type or value
anywhere fails before any stage runs.

``method`` (top level only; ``paper``, the default, or ``plus``) and ``switches`` (a list of
named switches on top, see :mod:`quant.methods`) apply to every stage; a stage's own keys (e.g.
``sensitivity.weight_scale``) override the preset for that stage. Each stage's record holds
its options with the method's settings resolved.

Layout of ``OUT``::

    calib/                     calibrate
    calib-sensitivity/         (only if sensitivity.calib asks for a smaller calibration set)
    sensitivity/sens.csv       sensitivity (+ protect list, heatmap)
    variants/NAME/bitmap.json  allocate (variants with an `allocate` section)
    variants/NAME/quant/       quantize
    benchmark/                 benchmark over the full-precision model and every variant

Each stage's folder gets a ``stage.json`` recording its settings (model, options, inputs and
outputs). A stage whose outputs are complete and whose settings are unchanged is skipped; a
stage that was interrupted is re-run and resumes itself. Changed settings for a finished stage
are an error naming the first setting that differs, rather than a silent overwrite.

The records hold settings, not spellings of paths: a path inside the run folder is recorded
relative to it (``$OUT/calib``), an existing file elsewhere by its name and sha256, so the same
run continues when ``--out`` is given as an absolute or a relative path, from another working
directory, or after the run folder was moved or copied.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from .errors import MixDQError
from .methods import DEFAULT_METHOD, method_settings
from .models.spec import ModelSpec
from .stages import (AllocateOptions, BenchmarkOptions, CalibrateOptions, QuantizeOptions,
                     SensitivityOptions, allocate, benchmark, calibrate, quantize, sensitivity)
from .utils.io import file_digest, write_json
from .utils.records import first_difference

STAGE_RECORD = "stage.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MODEL_KEYS = ("model", "device", "dtype", "lora", "lora_scale", "scheduler")
_METHOD_KEYS = ("method", "switches")
_SECTIONS = (*_MODEL_KEYS, *_METHOD_KEYS, "calibrate", "sensitivity", "variants", "benchmark")
# option keys that name files: relative paths are taken from the config file's folder
_PATH_KEYS = {"prompts", "real_images", "inception", "clip", "bit_map", "protect", "lora",
              "config", "quantized_base", "model"}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One quantized model: uniform bits (``quantize: {w_bits, a_bits}``) or an allocation.

    ``protect``: with an allocation, keep the sensitivity stage's protect list in floating point
    (``allocate: {protect: false}`` turns it off; a path names another list).
    """

    name: str
    quantize: QuantizeOptions
    allocate: AllocateOptions | None = None
    protect: bool = True


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run, every section validated. Build it with :meth:`load` or :meth:`from_dict`."""

    model: ModelSpec
    calibrate: CalibrateOptions
    sensitivity: SensitivityOptions
    variants: tuple[Variant, ...]
    benchmark: BenchmarkOptions | None
    sensitivity_calib: CalibrateOptions | None = None

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] = ()) -> "RunConfig":
        """Read a YAML/JSON run config, applying ``key.sub=value`` overrides (values in YAML)."""
        import yaml

        path = resolve_config(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise MixDQError(f"run config {path}: malformed YAML ({first})") from None
        except UnicodeDecodeError:
            raise MixDQError(f"run config {path}: not UTF-8 text") from None
        except OSError as e:
            raise MixDQError(f"run config {path}: cannot read it ({e.strerror})") from None
        data = _mapping(data, f"run config {path}")
        for item in overrides:
            _override(data, item)
        return cls.from_dict(data, base_dir=path.resolve().parent)

    @classmethod
    def from_dict(cls, data: dict, base_dir: str | Path = ".") -> "RunConfig":
        """Validate every section; relative paths are resolved against ``base_dir``."""
        base_dir = Path(base_dir)
        data = _mapping(data, "run config")
        unknown = [k for k in data if k not in _SECTIONS]
        if unknown:
            raise MixDQError(f"run config: unknown key {unknown[0]!r}; known: "
                             f"{', '.join(_SECTIONS)}")
        spec = ModelSpec.from_dict(_paths({k: data[k] for k in _MODEL_KEYS if k in data},
                                          base_dir))
        method = {k: data[k] for k in _METHOD_KEYS if k in data}
        _check_method(method)
        data = _with_method(data, method)
        if "calibrate" not in data or "prompts" not in (data["calibrate"] or {}):
            raise MixDQError("the run config needs calibrate.prompts")
        calib = _mapping(data["calibrate"], "calibrate")
        calib_options = CalibrateOptions.from_dict(_paths(calib, base_dir))
        sens = dict(_mapping(data.get("sensitivity") or {}, "sensitivity"))
        sens_calib = None
        if "calib" in sens:
            extra = _mapping(sens.pop("calib"), "sensitivity.calib")
            sens_calib = CalibrateOptions.from_dict(_paths({**calib, **extra}, base_dir),
                                                    "sensitivity.calib")
        sens_options = SensitivityOptions.from_dict(_paths(sens, base_dir))
        raw_variants = data.get("variants") or []
        if not isinstance(raw_variants, list):
            raise MixDQError("variants: expected a list")
        variants = tuple(_variant(v, i, base_dir) for i, v in enumerate(raw_variants))
        if not variants:
            raise MixDQError("the run config has no variants: nothing to quantize")
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise MixDQError(f"variant names repeat: {names}")
        bench = data.get("benchmark", {})
        bench_options = None if bench is None else BenchmarkOptions.from_dict(
            _paths(_mapping(bench, "benchmark"), base_dir))
        return cls(spec, calib_options, sens_options, variants, bench_options, sens_calib)

    def to_dict(self) -> dict:
        out = {**self.model.to_dict(), "method": self.calibrate.method,
               "switches": list(self.calibrate.switches), "calibrate": self.calibrate.to_dict(),
               "sensitivity": self.sensitivity.to_dict()}
        if self.sensitivity_calib is not None:
            out["sensitivity_calib"] = self.sensitivity_calib.to_dict()
        out["variants"] = [{"name": v.name, "quantize": v.quantize.to_dict(),
                            "allocate": None if v.allocate is None else v.allocate.to_dict(),
                            "protect": v.protect} for v in self.variants]
        out["benchmark"] = None if self.benchmark is None else self.benchmark.to_dict()
        return out


def presets() -> list[str]:
    """The names of the run configs that ship with mixdq (``mixdq run --config NAME``)."""
    from importlib import resources

    return sorted(p.name[:-5] for p in resources.files("quant.configs").iterdir()
                  if p.name.endswith(".yaml"))


def resolve_config(path: str | Path) -> Path:
    """A run config file: ``path`` itself, or the bundled preset of that name (``tiny``)."""
    from importlib import resources

    if Path(path).is_file():
        return Path(path)
    name = Path(path).name.removesuffix(".yaml")
    if str(path) in (name, f"{name}.yaml") and name in presets():
        return Path(str(resources.files("quant.configs").joinpath(f"{name}.yaml")))
    raise MixDQError(f"run config {path}: no such file and no such preset "
                     f"(presets: {', '.join(presets())})")


def _variant(data: Any, index: int, base_dir: Path) -> Variant:
    data = _mapping(data, f"variants[{index}]")
    name = data.get("name")
    where = f"variant {name}" if isinstance(name, str) else f"variants[{index}]"
    unknown = [k for k in data if k not in ("name", "quantize", "allocate")]
    if unknown:
        raise MixDQError(f"{where}.{unknown[0]}: unknown key; known: name, quantize, allocate")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MixDQError(f"variant name {name!r}: use letters, digits, '-', '_', '.'")
    quant = _paths(_mapping(data.get("quantize") or {}, f"{where}.quantize"), base_dir)
    alloc = data.get("allocate")
    uniform = "w_bits" in quant or "a_bits" in quant
    if alloc is None and not uniform:
        raise MixDQError(f"variant {name}: give `allocate:` budgets or "
                         f"`quantize: {{w_bits, a_bits}}`")
    if alloc is None:
        return Variant(name, QuantizeOptions.from_dict(quant, f"{where}.quantize"))
    if uniform or "bit_map" in quant:
        raise MixDQError(f"variant {name}: `allocate` and uniform bits exclude each other")
    alloc = dict(_mapping(alloc, f"{where}.allocate"))
    protect = alloc.pop("protect", True)
    if protect is not True and protect is not False:
        alloc["protect"] = protect
    return Variant(name,
                   QuantizeOptions.from_dict({**quant, "bit_map": "bitmap.json"},
                                             f"{where}.quantize"),
                   AllocateOptions.from_dict(_paths(alloc, base_dir), f"{where}.allocate"),
                   protect=protect is True)


def _check_method(method: dict) -> None:
    """The top-level ``method``/``switches``, checked once (errors name the top-level key)."""
    name = method.get("method", DEFAULT_METHOD)
    switches = method.get("switches", [])
    if isinstance(switches, str):
        switches = [switches]
    if not isinstance(name, str):
        raise MixDQError(f"method: expected a string, got {name!r}")
    if not isinstance(switches, list) or not all(isinstance(s, str) for s in switches):
        raise MixDQError(f"switches: expected a list of switch names, got {switches!r}")
    try:
        method_settings(name, switches)
    except MixDQError as e:
        raise MixDQError(f"{'switches' if 'switch' in str(e) else 'method'}: {e}") from None


def _with_method(data: dict, method: dict) -> dict:
    """``data`` with the top-level method settings in every stage section (none may set its
    own: one method per run)."""
    def put(section: Any, where: str) -> Any:
        if not isinstance(section, dict):
            return section  # the section's own check reports it
        for key in _METHOD_KEYS:
            if key in section:
                raise MixDQError(f"{where}.{key}: set {key} at the top level of the run config "
                                 f"(it applies to every stage)")
        return {**section, **method}

    out = dict(data)
    if "calibrate" in out:
        out["calibrate"] = put(out["calibrate"], "calibrate")
    out["sensitivity"] = put(out.get("sensitivity") or {}, "sensitivity")
    if isinstance(out["sensitivity"], dict) and "calib" in out["sensitivity"]:
        out["sensitivity"]["calib"] = put(out["sensitivity"]["calib"], "sensitivity.calib")
    if out.get("benchmark", {}) is not None:
        out["benchmark"] = put(out.get("benchmark", {}), "benchmark")
    if isinstance(out.get("variants"), list):
        variants = []
        for i, v in enumerate(out["variants"]):
            if isinstance(v, dict):
                v = dict(v)
                where = f"variant {v.get('name', i)}"
                v["quantize"] = put(v.get("quantize") or {}, f"{where}.quantize")
                if v.get("allocate") is not None:
                    v["allocate"] = put(v["allocate"], f"{where}.allocate")
            variants.append(v)
        out["variants"] = variants
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


def _paths(options: dict, base_dir: Path) -> dict:
    return {k: _resolve(v, base_dir) if k in _PATH_KEYS and isinstance(v, str) else v
            for k, v in options.items()}


def _resolve(value: str, base_dir: Path) -> str:
    if value in ("tiny", "proxy") or value.startswith("hf:") or Path(value).is_absolute():
        return value
    candidate = base_dir / value
    return str(candidate) if candidate.exists() else value


@dataclasses.dataclass
class Stage:
    """One stage call: its folder, the files that mean it finished, and its settings."""

    name: str
    kind: str
    folder: Path
    outputs: list[Path]
    record: dict
    call: Callable[[], Any]
    section: str | None = None  # the run config key of its options (``--set SECTION.KEY=``)

    def finished(self) -> bool:
        record = self.folder / STAGE_RECORD
        if not record.is_file() or not all(p.exists() for p in self.outputs):
            return False
        try:
            previous = json.loads(record.read_text(encoding="utf-8")).get("config")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return False  # a damaged record: the stage runs again and resumes itself
        diff = first_difference(previous, self.record)
        if diff:
            raise MixDQError(f"stage {self.name} in {self.folder} finished with other settings "
                             f"({diff}); delete that folder or use a new --out to redo it")
        return True


def _portable(value: Any, out: Path) -> Any:
    """A path-valued setting as recorded: inside the run folder, relative to it; an existing
    file elsewhere, by name and content; anything else (a Hub id, ``tiny``, a folder outside
    the run) as given."""
    if not isinstance(value, (str, Path)) or not str(value):
        return value
    path = Path(value)
    try:
        inside = path.resolve().relative_to(out.resolve())
    except ValueError:
        inside = None
    if inside is not None:
        return "$OUT" if inside == Path(".") else f"$OUT/{inside.as_posix()}"
    if path.is_file():
        return {"file": path.name, "sha256": file_digest(path)}
    return str(value)


def _stage(name, kind, folder, outputs, model, options, call, run_dir: Path, **inputs) -> Stage:
    model_record = None if model is None else {
        k: _portable(v, run_dir) if k in ("model", "lora") else v
        for k, v in model.to_dict().items()}
    record = {"stage": kind, **({"model": model_record} if model is not None else {}),
              "options": {k: _portable(v, run_dir) if k in _PATH_KEYS else v
                          for k, v in options.to_dict().items()},
              **{k: ({n: _portable(p, run_dir) for n, p in v.items()} if isinstance(v, dict)
                     else _portable(v, run_dir)) for k, v in inputs.items()}}
    return Stage(name, kind, folder, outputs, record, call)


def plan(config: RunConfig, out: str | Path) -> list[Stage]:
    """The stages of a run, in order, each with its settings and its call."""
    out, model = Path(out), config.model

    def stage(name, kind, folder, outputs, model, options, call, **inputs) -> Stage:
        return _stage(name, kind, folder, outputs, model, options, call, out, **inputs)

    calib = out / "calib"
    stages = [stage("calibrate", "calibrate", calib, [calib / "manifest.json"], model,
                    config.calibrate, lambda: calibrate(model, config.calibrate, calib),
                    out=calib)]
    stages[0].section = "calibrate"
    sens_calib = calib
    if config.sensitivity_calib is not None:
        sens_calib = out / "calib-sensitivity"
        options = config.sensitivity_calib
        stages.append(stage("calibrate (sensitivity)", "calibrate", sens_calib,
                            [sens_calib / "manifest.json"], model, options,
                            lambda: calibrate(model, options, sens_calib), out=sens_calib))
        stages[-1].section = "sensitivity.calib"
    sens_csv = out / "sensitivity" / "sens.csv"
    if any(v.allocate is not None for v in config.variants):
        stages.append(stage("sensitivity", "sensitivity", sens_csv.parent, [sens_csv], model,
                            config.sensitivity,
                            lambda: sensitivity(model, config.sensitivity, sens_calib, sens_csv),
                            calib=sens_calib, out=sens_csv))
        stages[-1].section = "sensitivity"
    quantized = {}
    for v in config.variants:
        folder = out / "variants" / v.name
        qoptions = v.quantize
        if v.allocate is not None:
            bitmap = folder / "bitmap.json"
            aoptions = v.allocate
            if v.protect:
                aoptions = aoptions.replace(protect=str(sens_csv.with_suffix(".protect.txt")))
            # the measured pick generates images of the main calibration's first prompts
            pick = {"calib": calib} if aoptions.measured_pick else {}
            # the model is known: the table must also cover every layer quantize will need
            stages.append(stage(f"allocate {v.name}", "allocate", folder, [bitmap],
                                model if pick else None, aoptions,
                                _bind(allocate, aoptions, sens_csv, bitmap, model=model, **pick),
                                sensitivity=sens_csv, out=bitmap, **pick))
            qoptions = qoptions.replace(bit_map=str(bitmap))
        qdir = folder / "quant"
        stages.append(stage(f"quantize {v.name}", "quantize", folder,
                            [qdir / "quant_config.json"], model, qoptions,
                            _bind(quantize, model, qoptions, calib, qdir), calib=calib,
                            out=qdir))
        quantized[v.name] = qdir
    if config.benchmark is not None:
        bench = out / "benchmark"
        stages.append(stage("benchmark", "benchmark", bench, [bench / "report.json"], model,
                            config.benchmark, _bind(benchmark, model, config.benchmark,
                                                    quantized, bench),
                            out=bench, quantized=quantized))
        stages[-1].section = "benchmark"
    return _one_record_per_folder(stages)


def _bind(function, *args, **kwargs) -> Callable[[], Any]:
    return lambda: function(*args, **kwargs)


def _one_record_per_folder(stages: list[Stage]) -> list[Stage]:
    # allocate and quantize of a variant share its folder: give each its own record file
    seen: dict[Path, int] = {}
    for stage in stages:
        n = seen.get(stage.folder, 0)
        seen[stage.folder] = n + 1
        if n:
            stage.folder = stage.folder / f".{stage.kind}"
    return stages


def _in_run_terms(message: str, stage: Stage) -> str:
    """A stage's error with its command-line flags (``--column``) named as run config
    overrides (``--set calibrate.column=...``), the way a ``mixdq run`` user sets them."""
    if stage.section is None:
        return message
    for key in stage.record["options"]:
        flag = "--" + key.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){re.escape(flag)}(?![\w-])(?: ([^\s(),;:]+))?",
                         lambda m: f"--set {stage.section}.{key}={m.group(1) or '...'}",
                         message)
    return message


def run(config: RunConfig, out: str | Path, log: Callable[[str], None] = print,
        execute: Callable[[Stage], Any] | None = None) -> list[tuple[str, str]]:
    """Run every stage that is not finished yet.

    Args:
        config: the run (already validated: building it checked every section).
        out: the run's folder.
        log: where progress lines go.
        execute: how a stage is run (default: ``stage.call()``); injectable for tests.

    Returns:
        ``(stage name, "skipped" | "ran in N s")`` for every stage.

    Raises:
        MixDQError: a stage failed (the message names it and its cause).
    """
    out = Path(out)
    stages = plan(config, out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run_config.json", config.to_dict())
    done = []
    for stage in stages:
        if stage.finished():
            log(f"[mixdq run] {stage.name}: complete, skipped")
            done.append((stage.name, "skipped"))
            continue
        log(f"[mixdq run] {stage.name}: {json.dumps(stage.record['options'])}")
        start = time.monotonic()
        try:
            stage.call() if execute is None else execute(stage)
        except MixDQError as e:
            raise MixDQError(f"stage {stage.name} failed: {_in_run_terms(str(e), stage)} (fix "
                             f"the cause and rerun: finished stages are kept)") from None
        write_json(stage.folder / STAGE_RECORD, {"config": stage.record})
        done.append((stage.name, f"ran in {time.monotonic() - start:.1f} s"))
    return done
