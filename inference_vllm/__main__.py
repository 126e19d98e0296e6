"""`python -m inference_vllm [overrides]`: one vLLM engine over every prompt of a job."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_argv_or_exit, finish_task, run_outcome
from inference_core.config import register_resolvers
from inference_core.model.adapters import Adapter
from inference_core.run.job import Job

log = logging.getLogger("inference_vllm")


ENGINES = ("vllm", "ray")


def start_engine(job: Job, adapters: Sequence[Adapter] = ()):
    if job.engine_name == "ray":  # vLLM workers under Ray Data (a Ray cluster, or local)
        from inference_vllm.ray_engine import RayEngine

        return RayEngine(str(job.model_path), job.engine_cfg, job.sampling.seed)
    from inference_vllm.engine import VLLMEngine

    return VLLMEngine(str(job.model_path), job.engine_cfg, job.sampling.seed, adapters)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> int:
    return finish_task(lambda: run_job(cfg))


def run_job(cfg: DictConfig) -> tuple[int, str]:
    if cfg.engine.name not in ENGINES:
        reason = (f"engine={cfg.engine.name} does not run here: use `python -m inference_hf` (or "
                  f"torchrun) for the Transformers engine; this entry runs {', '.join(ENGINES)}")
        log.error("%s", reason)
        return 2, reason
    return run_outcome(cfg, start_engine)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    register_resolvers()
    check_argv_or_exit(sys.argv[1:])
    main()
