"""`python -m inference_vllm [overrides]`: one vLLM engine over every prompt of a job."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_group_choices, run_cli
from inference_core.config import register_resolvers
from inference_core.rundir.faults import exit_if_output_dir_unwritable
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
def main(cfg: DictConfig) -> None:
    if cfg.engine.name not in ENGINES:
        log.error("engine=%s does not run here: use `python -m inference_hf` (or torchrun) "
                  "for the Transformers engine; this entry runs %s", cfg.engine.name, ENGINES)
        sys.exit(2)
    code = run_cli(cfg, start_engine)
    if code:
        sys.exit(code)


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    register_resolvers()
    check_group_choices(sys.argv[1:])
    exit_if_output_dir_unwritable(sys.argv[1:], "config")  # before Hydra logs into it
    main()
