"""`python -m inference_vllm [overrides]`: one vLLM engine over every prompt of a job."""
from __future__ import annotations

import logging
import sys
from typing import Sequence

import hydra
from omegaconf import DictConfig

from inference_core.cli import check_group_choices, run_cli
from inference_core.config import register_resolvers
from inference_core.model.adapters import Adapter
from inference_core.run.job import Job

log = logging.getLogger("inference_vllm")


# openai: an OpenAI-compatible endpoint (a `vllm serve` or hosted API); nothing loads here.
ENGINES = ("vllm", "ray", "openai")


def start_engine(job: Job, adapters: Sequence[Adapter] = ()):
    if job.engine_name == "openai":  # constructed from its `_target_`, with the one signature
        from hydra.utils import get_class

        cls = get_class(job.engine_cfg["_target_"])
        return cls(str(job.model_path), job.engine_cfg, job.sampling.seed, adapters)
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
    main()
