"""The two methods, as plain data: ``paper`` (the original MixDQ) and ``plus`` (ours).

A method is, per stage, the values of the library switches that stage reads. ``paper`` is every
library default: it reproduces the original's choices (``docs/METHODS.md``, and section 8 of the
method notes). ``plus`` is ``paper`` with the named switches of :data:`PLUS_SWITCHES` turned on;
a switch is in that list only where ``scripts/bench_methods.py`` measured that it helps (the
table is in ``docs/METHODS.md``). Stages and where their switches live:

- ``calibrate``: :func:`quant.calib.prompts.read_prompts` (``coco_order``), the pipeline's
  ``dtype`` (:func:`quant.models.load_fp_pipeline`);
- ``sensitivity``: :class:`quant.sensitivity.config.SensitivityConfig`;
- ``allocate``: :class:`quant.bitalloc.config.AllocConfig`, plus ``pick`` (``images``: the
  split mode's final pick measured by :class:`quant.bitalloc.pick.ImageScore` on ``pick_prompts``
  calibration prompts; ``predicted``: by the predicted loss, no images) ;
- ``quantize``: :func:`quant.quantize.quantize_unet` keywords;
- ``benchmark``: the COCO order of its prompts.

    from quant.methods import method_settings
    SensitivityConfig(**method_settings("plus")["sensitivity"])

The stage options of :mod:`quant.stages` carry ``method`` (default ``paper``) and ``switches``
(extra named switches on top); their method-governed fields default to ``None`` and
:func:`fill_options` sets each one left unset from the method, so an explicit setting always
wins over the preset and ``to_dict()`` records the resolved values.
"""

from __future__ import annotations

import copy

from .errors import MixDQError

#: The original's choices, stage -> switch -> value (equal to the library defaults).
PAPER: dict[str, dict] = {
    "calibrate": {
        "coco_order": "annotations",   # first caption per image, annotation order
        "dtype": "float32",            # the full-precision pipeline in fp32, also on CUDA
    },
    "sensitivity": {
        "protect_rule": "group",       # 1% per group at A8: quality by SQNR, content by SSIM
        "protect_fraction": 0.01,
        "ssim_size": None,             # SSIM at the decoded resolution, window side - 1 (511)
        "weight_scale": "minmax",
        "dtype": "float32",
    },
    "allocate": {
        "mode": "split",               # per-group programs, budget share swept over a grid
        "split_ratios": None,          # grid of split_points shares: 10 weight, 20 act
        "split_points": {"weight": 10, "act": 20},
        "band": 0.02,                  # each group within +-0.02 bits of its share
        "content_metric": "ssim",
        "weight_storage": "packed",    # 2-bit counted at 2 bits = the checkpoint's bytes
        "pick": "images",              # final pick measured on generated images
        "pick_prompts": 4,             # ... on 4 calibration prompts, float MSE + SSIM
    },
    "quantize": {
        "weight_scale": "minmax",
        "conv1_split": False,          # only conv_shortcut split (activation and weight)
    },
    "benchmark": {
        "coco_order": "annotations",
    },
}

#: Each named deviation from ``paper``: documentation and the stage values it sets.
SWITCHES: dict[str, dict] = {
    "mse_clipping": {
        "doc": "per-channel weight clipping searched for the least squared error instead of "
               "min-max (the original zeroes 92-97% of a layer's weights at 2 bits)",
        "sensitivity": {"weight_scale": "mse"},
        "quantize": {"weight_scale": "mse"},
    },
    "joint_objective": {
        "doc": "one program over both groups minimising the groups' normalised losses, "
               "instead of per-group programs with a swept budget share and a measured pick",
        "allocate": {"mode": "joint"},
    },
    "conv1_split": {
        "doc": "the up-block resnets' conv1 also gets one activation quantizer per slice of "
               "its concat(hidden, skip) input (costs an extra GEMM at deployment)",
        "quantize": {"conv1_split": True},
    },
    "fp16_sensitivity": {
        "doc": "calibration and sensitivity in fp16 on CUDA: about 2x faster, but fp16 "
               "rounding sets a noise floor under the 8-bit rows",
        "calibrate": {"dtype": "float16"},
        "sensitivity": {"dtype": "float16"},
    },
}

#: The switches on in ``plus``: those ``scripts/bench_methods.py`` showed to help on the proxy
#: (see ``docs/METHODS.md``). On today's proxy none does: MSE clipping, the joint objective and
#: the conv1 split each raise the output SQNR but lower the image SSIM, so ``plus`` equals
#: ``paper`` until a re-run on the new proxy shows otherwise (then update this and the table).
PLUS_SWITCHES: tuple[str, ...] = ()

METHODS = ("paper", "plus")
DEFAULT_METHOD = "paper"


def apply_switches(settings: dict, switches) -> dict:
    """A copy of ``settings`` (stage -> values) with the named ``switches`` applied."""
    out = copy.deepcopy(settings)
    for name in switches:
        if name not in SWITCHES:
            raise MixDQError(f"unknown method switch {name!r}; known: {', '.join(SWITCHES)}")
        for stage, values in SWITCHES[name].items():
            if stage != "doc":
                out.setdefault(stage, {}).update(copy.deepcopy(values))
    return out


def method_settings(method: str = DEFAULT_METHOD, extra_switches=()) -> dict:
    """Stage -> switch values of ``method`` (``paper`` or ``plus``), plus ``extra_switches``.

    Raises:
        MixDQError: an unknown method or switch.
    """
    if method not in METHODS:
        raise MixDQError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    switches = (PLUS_SWITCHES if method == "plus" else ()) + tuple(extra_switches)
    return apply_switches(PAPER, switches)


def fill_options(options, stage: str, aliases: dict[str, str] | None = None) -> None:
    """Set each method-governed field of the frozen stage ``options`` that is ``None`` from
    ``options.method`` plus ``options.switches`` (for ``stage``'s settings).

    ``aliases`` maps a library key to the options' field name where they differ (the stage
    options call the pipeline dtype ``compute_dtype``: ``dtype`` is the model's). Errors name the
    options' section (``sensitivity.method``).
    """
    section = getattr(options, "SECTION", stage)
    if options.method not in METHODS:
        raise MixDQError(f"{section}.method: expected one of {', '.join(METHODS)}, got "
                         f"{options.method!r}")
    try:
        values = method_settings(options.method, options.switches).get(stage, {})
    except MixDQError as e:
        raise MixDQError(f"{section}.switches: {e}") from None
    aliases = aliases or {}
    for key, value in values.items():
        field = aliases.get(key, key)
        if hasattr(options, field) and getattr(options, field) is None:
            object.__setattr__(options, field, copy.deepcopy(value))


def describe() -> str:
    """A plain-text table of the switches: name, paper/plus value, what it does."""
    lines = []
    for name, switch in SWITCHES.items():
        state = "on" if name in PLUS_SWITCHES else "off"
        where = ", ".join(f"{stage}.{key}={value!r}" for stage, values in switch.items()
                          if stage != "doc" for key, value in values.items())
        lines.append(f"{name}: paper off, plus {state} ({where}): {switch['doc']}")
    return "\n".join(lines)
