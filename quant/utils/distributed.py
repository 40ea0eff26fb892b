"""The one torchrun helper: sharding work over processes (gloo on CPU, nccl on CUDA).

torchrun passes rank and world size to its workers through the environment (its documented
protocol); they are read here and nowhere else. Outside ``torchrun`` everything here is a
single-process no-op, so the same code path serves both: a run with one process is a run with
``world == 1``. The sensitivity stage shards layers with it, the benchmark shards generation.
"""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import os
from typing import Any

import torch

from ..errors import MixDQError

# Ranks wait for each other only at the start and at the end; the slowest rank's share of an
# SDXL run can take hours, so the default collective timeout (10-30 min) is far too short.
TIMEOUT = datetime.timedelta(hours=48)


@dataclasses.dataclass(frozen=True)
class Shard:
    """A place among the workers: rank ``rank`` of ``world_size`` (what sharding code needs)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self):
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"bad shard: rank {self.rank} of {self.world_size}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every worker got here (a no-op in a single process)."""
        if self.world_size > 1:
            torch.distributed.barrier()


class Distributed:
    """This process's place among the ranks, and the few collectives the run needs.

    Args:
        device: the device asked for (``cpu``, ``cuda``, ``cuda:N`` or ``None`` for the
            default). Under ``torchrun`` on CUDA each rank takes ``cuda:LOCAL_RANK``.

    Use as a context manager: it joins the process group on entry (when launched by torchrun)
    and leaves it on exit.
    """

    def __init__(self, device: str | torch.device | None = None):
        import torch.distributed as dist

        from ..precision import default_device

        self.launched = dist.is_available() and dist.is_torchelastic_launched()
        self.rank = int(os.environ.get("RANK", 0)) if self.launched else 0
        self.world = int(os.environ.get("WORLD_SIZE", 1)) if self.launched else 1
        local = int(os.environ.get("LOCAL_RANK", 0)) if self.launched else 0
        self.local_rank = local
        device = torch.device(device) if device is not None else default_device()
        if device.type == "cuda" and self.launched:
            if local >= torch.cuda.device_count():
                raise MixDQError(f"rank {self.rank} has local rank {local} but only "
                                 f"{torch.cuda.device_count()} CUDA device(s) are visible")
            device = torch.device("cuda", local)
        self.device = device
        self._owns_group = False

    def __enter__(self) -> "Distributed":
        import torch.distributed as dist

        if self.launched and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            kwargs = {}
            if self.device.type == "cuda" and "device_id" in inspect.signature(
                    dist.init_process_group).parameters:
                kwargs["device_id"] = self.device  # tells nccl's barrier which GPU is ours
            dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)
            self._owns_group = True
        return self

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False

    @property
    def place(self) -> Shard:
        """This process's :class:`Shard`."""
        return Shard(self.rank, self.world, self.local_rank)

    @property
    def main(self) -> bool:
        """Whether this is rank 0 (the one that merges and reports)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        import torch.distributed as dist

        if self.world > 1:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as dist

        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def shard(self, items: list) -> list:
        """This rank's share: round robin over ``items`` in their order."""
        return items[self.rank::self.world]
