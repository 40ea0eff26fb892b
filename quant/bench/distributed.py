"""Sharding generation across processes started by torchrun.

torchrun passes rank and world size to its workers through the environment (its documented
protocol); we read them once here through ``torch.distributed`` and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime

import torch


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's place among the workers: rank ``rank`` of ``world_size``."""

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
        """Wait until every worker got here (a no-op without torchrun)."""
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_shard(timeout_hours: float = 12.0) -> Shard:
    """Join the torchrun process group (gloo) if launched by torchrun, else a single shard.

    Args:
        timeout_hours: how long a barrier may wait for the slowest worker (generation of a
            large prompt set takes hours).

    Returns:
        This process's :class:`Shard`.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_torchelastic_launched()):
        return Shard()
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=timeout_hours))
    import os

    return Shard(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
