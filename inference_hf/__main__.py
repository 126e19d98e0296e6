"""`python -m inference_hf [overrides]` or `torchrun --nproc_per_node=N -m inference_hf [overrides]`.

Under torchrun every rank takes its share of users (balanced by prompt tokens) and writes their
files; after all ranks are done, rank 0 writes test_leaderboard.json and one summary.
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_argv_or_exit, exit_code_of, finish_task, run_outcome
from inference_core.config import register_resolvers
from inference_core.run.finish import finish
from inference_core.run.job import prepare_jobs
from inference_core.rundir.faults import exit_if_output_dir_unwritable

log = logging.getLogger("inference_hf")


def worst_code_over_ranks(code: int) -> int:
    """All ranks wait here (the barrier) and learn whether any rank failed."""
    import torch
    import torch.distributed as dist

    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if dist.get_backend() == "nccl" else "cpu"
    codes = torch.tensor([code], device=device)
    dist.all_reduce(codes, op=dist.ReduceOp.MAX)
    return int(codes.item())


@hydra.main(version_base="1.3", config_path="../conf", config_name="config_hf")
def main(cfg: DictConfig) -> int:
    return finish_task(lambda: run_ranks(cfg))


def run_ranks(cfg: DictConfig) -> tuple[int, str]:
    """One process, or this torchrun rank's share of the users; rank 0 merges."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return run_outcome(cfg)
    else:
        import torch
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        try:
            code, reason = run_outcome(cfg, shard=(world, rank), merge=False)
            worst = worst_code_over_ranks(code)
            if rank == 0 and worst == 0:
                worst = exit_code_of(lambda: [finish(j) for j in prepare_jobs(cfg, (world, 0))])
        finally:
            dist.destroy_process_group()
        return worst, reason or (f"another rank failed (exit {worst})" if worst else "")


if __name__ == "__main__":
    register_resolvers()
    check_argv_or_exit(sys.argv[1:], "config_hf")
    exit_if_output_dir_unwritable(sys.argv[1:], "config_hf")  # before Hydra logs into it
    main()
