"""The five stages as library functions of one shape; the CLI and ``mixdq run`` call these.

Every stage takes a :class:`~quant.models.ModelSpec` (where it loads a model), its typed
options (``to_dict``/``from_dict``; unknown keys and wrong types fail naming the key), its
input files and its output path, and writes the same files as the matching subcommand::

    from quant.stages import (ModelSpec, CalibrateOptions, SensitivityOptions, AllocateOptions,
                              QuantizeOptions, BenchmarkOptions, calibrate, sensitivity, allocate,
                              quantize, benchmark)

    model = ModelSpec("tiny")
    calibrate(model, CalibrateOptions(prompts="configs/prompts/coco2017_val_first1024.txt",
                                      num_prompts=8), "runs/calib")
    sensitivity(model, SensitivityOptions(), "runs/calib", "runs/sens.csv")
    allocate(AllocateOptions(weight_bits=4.0, act_bits=8.0, protect="runs/sens.protect.txt"),
             "runs/sens.csv", "runs/bitmap.json")
    quantize(model, QuantizeOptions(bit_map="runs/bitmap.json"), "runs/calib", "runs/quant")
    benchmark(model, BenchmarkOptions(prompt=("a cat",)), {"mixdq": "runs/quant"}, "runs/bench")

Each stage is resumable, as its subcommand is.
"""

from ..models.spec import ModelSpec
from ..options import Options
from .allocate import AllocateOptions, allocate
from .benchmark import BenchmarkOptions, benchmark
from .calibrate import CalibrateOptions, calibrate
from .quantize import QuantizeOptions, quantize
from .sensitivity import SensitivityOptions, sensitivity

__all__ = ["ModelSpec", "Options", "CalibrateOptions", "calibrate", "SensitivityOptions",
           "sensitivity", "AllocateOptions", "allocate", "QuantizeOptions", "quantize",
           "BenchmarkOptions", "benchmark"]
