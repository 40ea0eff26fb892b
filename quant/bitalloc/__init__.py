"""Bit allocation: sensitivity table and budgets in, per-layer bit map out (METHOD.md section 5).

- :class:`SensitivityTable` / :func:`read_protect_list` - read and check the inputs.
- :class:`AllocConfig` - candidate bits, joint or split mode, metrics.
- :class:`Budget` - average bits or megabytes; :func:`allocate` / :func:`allocate_target` - the
  integer programs (pulp + CBC); :func:`sweep` / :func:`write_front` - the Pareto front.
"""

from .allocate import Allocation, Budget, ProgramResult, allocate, allocate_target, cost_range
from .config import AllocConfig
from .objective import Objective, Prediction
from .solver import InfeasibleBudget, Solution, solve_mckp
from .sweep import pareto, sweep, write_front
from .table import Measurement, SensitivityTable, read_protect_list

__all__ = ["AllocConfig", "Allocation", "Budget", "InfeasibleBudget", "Measurement", "Objective",
           "Prediction", "ProgramResult", "SensitivityTable", "Solution", "allocate",
           "allocate_target", "cost_range", "pareto", "read_protect_list", "solve_mckp", "sweep",
           "write_front"]
