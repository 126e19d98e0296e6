"""`python -m inference_vllm [overrides]`: one vLLM engine over every prompt of a job."""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_group_choices, job_from, run_cli
from inference_core.config import register_resolvers
from inference_core.job import Job


def start_engine(job: Job):
    from .engine import VLLMEngine

    return VLLMEngine(str(job.model_path), job.engine_cfg, job.sampling.seed)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    code = run_cli(job_from(cfg), start_engine)
    if code:
        sys.exit(code)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    register_resolvers()
    check_group_choices(sys.argv[1:])
    main()
