"""`python -m inference_vllm [overrides]`: one engine over every prompt of a job.

The engine is the config's (`engine=vllm` by default; `engine=ray`, `engine=hf`, ... by their
`_target_`); torchrun data parallelism goes through `python -m inference_hf`.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_argv_or_exit, finish_task, run_outcome
from inference_core.config import register_resolvers
from inference_core.rundir.faults import exit_if_output_dir_unwritable


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> int:
    return finish_task(lambda: run_command(cfg))


def run_command(cfg: DictConfig) -> tuple[int, str]:
    """One engine, or N replica processes (engine.data_parallel_size) merged here once."""
    from inference_vllm.replicas import (data_parallel_size, is_replica, run_replica,
                                         run_replicas)

    if data_parallel_size(cfg) > 1:
        code = run_replicas(cfg)
        return code, f"a replica or job failed (exit {code})" if code else ""
    return run_replica(cfg) if is_replica() else run_outcome(cfg)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    register_resolvers()
    check_argv_or_exit(sys.argv[1:])
    exit_if_output_dir_unwritable(sys.argv[1:], "config")  # before Hydra logs into it
    main()
