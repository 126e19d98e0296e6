"""`python -m inference_hf [overrides]` or `torchrun --nproc_per_node=N -m inference_hf [overrides]`.

Under torchrun every rank takes its share of users (balanced by prompt tokens) and writes their
files; after all ranks are done, rank 0 writes test_leaderboard.json and one summary.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_group_choices, exit_code_of, run_cli
from inference_core.config import register_resolvers
from inference_core.rundir.faults import exit_if_output_dir_unwritable
from inference_core.model.adapters import Adapter
from inference_core.run.job import Job, prepare_jobs
from inference_core.run.pipeline import finish

log = logging.getLogger("inference_hf")


def start_engine(job: Job, adapters: Sequence[Adapter] = ()):
    from inference_hf.engine import HFEngine

    return HFEngine(str(job.model_path), job.engine_cfg, job.sampling.seed, adapters)


def worst_code_over_ranks(code: int) -> int:
    """All ranks wait here (the barrier) and learn whether any rank failed."""
    import torch
    import torch.distributed as dist

    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if dist.get_backend() == "nccl" else "cpu"
    codes = torch.tensor([code], device=device)
    dist.all_reduce(codes, op=dist.ReduceOp.MAX)
    return int(codes.item())


@hydra.main(version_base="1.3", config_path="../conf", config_name="config_hf")
def main(cfg: DictConfig) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        code = run_cli(cfg, start_engine)
    else:
        import torch
        import torch.distributed as dist

        rank = int(os.environ["RANK"])
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        try:
            code = worst_code_over_ranks(run_cli(cfg, start_engine, (world, rank), merge=False))
            if rank == 0 and code == 0:
                code = exit_code_of(lambda: [finish(j) for j in prepare_jobs(cfg, (world, 0))])
        finally:
            dist.destroy_process_group()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    register_resolvers()
    check_group_choices(sys.argv[1:])
    exit_if_output_dir_unwritable(sys.argv[1:], "config_hf")  # before Hydra logs into it
    main()
