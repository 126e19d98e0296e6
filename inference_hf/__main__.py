"""`python -m inference_hf [overrides]` or `torchrun --nproc_per_node=N -m inference_hf [overrides]`.

Under torchrun every rank takes its share of users (balanced by prompt tokens) and writes their
files; after all ranks are done, rank 0 writes test_leaderboard.json and one summary for every
job that no rank failed.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from inference_core.cli import (ShardOutcome, check_argv_or_exit, finish_outcome, finish_task,
                                run_outcome, shard_outcome)
from inference_core.config import register_resolvers
from inference_core.run.job import Job
from inference_core.rundir.faults import exit_if_output_dir_unwritable

log = logging.getLogger("inference_hf")


def over_ranks(values: list[int]) -> list[int]:
    """The element-wise maximum of every rank's values; all ranks wait here."""
    import torch
    import torch.distributed as dist

    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [int(v) for v in tensor.tolist()]


def jobs_to_merge(outcome: ShardOutcome) -> list[Job]:
    """The jobs no rank failed and some rank served (one every rank found finished is left as
    it is); none when the ranks do not hold the same jobs (preparing them failed somewhere).
    Every rank decides alike."""
    count = len(outcome.jobs)
    if over_ranks([count, -count]) != [count, -count] or not count:  # the most and the fewest
        return []
    failed = over_ranks([int(job.output_dir in outcome.failed) for job in outcome.jobs])
    served = over_ranks([int(job.output_dir not in outcome.idle) for job in outcome.jobs])
    return [job for job, bad, busy in zip(outcome.jobs, failed, served) if busy and not bad]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config_hf")
def main(cfg: DictConfig) -> int:
    return finish_task(lambda: run_ranks(cfg))


def run_ranks(cfg: DictConfig) -> tuple[int, str]:
    """One process, or this torchrun rank's share of the users; rank 0 merges every job no rank
    failed (a job that failed on any rank is named, the others finish)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return run_outcome(cfg)
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    try:
        outcome = shard_outcome(cfg, (world, rank))
        worst = over_ranks([outcome.code])[0]
        merged = jobs_to_merge(outcome)
        reason = outcome.reason or (f"another rank failed (exit {worst})" if worst else "")
        if rank == 0:
            code, finished = finish_outcome(merged)
            worst, reason = max(worst, code), reason or finished
    finally:
        dist.destroy_process_group()
    return worst, reason


if __name__ == "__main__":
    register_resolvers()
    check_argv_or_exit(sys.argv[1:], "config_hf")
    exit_if_output_dir_unwritable(sys.argv[1:], "config_hf")  # before Hydra logs into it
    main()
