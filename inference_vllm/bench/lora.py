"""`python -m inference_vllm.bench.lora`: N LoRA adapters in one engine run vs one run each.

Both modes run the same (adapter, ablation) pairs on the same data through the real pipeline:

  one_engine     one vLLM start with every adapter; all pairs in one continuous batch
  one_per_run    what a sweep without adapter support does: a fresh engine per adapter

Times are wall clock per mode, engine start-ups included (that is the saving on a sweep).
Without --adapters, random rank-8 adapters of the model are built with peft (one per ablation),
so the figures are about serving, not about what the adapters say.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from inference_core.model.adapters import AdapterPair, adapter_pairs
from inference_core.run.job import prepare_job, prepare_jobs
from inference_core.run.pipeline import StartEngine, run_job, run_jobs
from inference_core.rundir.facts import describe_device
from inference_core.rundir.writers import write_json_atomic

from inference_vllm.bench.speed import compose
from inference_vllm.bench.starts import mode_row, render_modes
from inference_vllm.engine import VLLMEngine

log = logging.getLogger(__name__)

ABLATIONS = ("profile_only", "history_only", "context_only", "profile_and_history")


def make_random_adapter(model_path: Path, folder: Path, seed: int, rank: int = 8) -> Path:
    """A LoRA on q/v projections with random (not zero) B, so that it changes the text."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                        init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(str(folder))
    return folder


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.bench.lora",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--adapters", default=None,
                   help="folder of adapters, one subfolder per ablation (default: random ones)")
    p.add_argument("--count", type=int, default=3, help="random adapters to build (1-4)")
    p.add_argument("--dataset", default="Chameleons")
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-users", type=int, default=None, help="first K users only")
    p.add_argument("--out", default="outputs/bench_lora")
    args = p.parse_args(argv)
    if not 1 <= args.count <= len(ABLATIONS):
        p.error(f"--count must be in 1..{len(ABLATIONS)}")
    return args


def overrides(args: argparse.Namespace, folder: Path, root: Path) -> list[str]:
    return [f"dataset={args.dataset}", f"model.path={folder}",
            f"sampling.num_samples={args.num_samples}", f"sampling.max_tokens={args.max_tokens}",
            f"output_dir={root}/${{ablation.name}}", f"max_users={args.max_users or 'null'}",
            "overwrite=true", "evaluate=false", "allow_skips=true"]


def start(job: Any, adapters: Sequence[Any]) -> VLLMEngine:
    return VLLMEngine(str(job.model_path), job.engine_cfg, job.sampling.seed, adapters)


def run(args: argparse.Namespace, start_engine: StartEngine = start) -> dict[str, Any]:
    out = Path(args.out).resolve()
    folder = Path(args.adapters).resolve() if args.adapters else out / "adapters"
    if not args.adapters:
        base = prepare_job(compose(f"output_dir={out}")).model_path  # the embedded model
        for seed, ablation in enumerate(ABLATIONS[:args.count]):
            make_random_adapter(base, folder / ablation, seed)
    pairs: list[AdapterPair] = adapter_pairs(compose(*overrides(args, folder, out)))
    log.info("%d adapters: %s", len(pairs), ", ".join(p.path.name for p in pairs))
    t = time.perf_counter()
    shared = run_jobs(prepare_jobs(compose(*overrides(args, folder, out / "one_engine"))),
                      start_engine)
    one_engine = mode_row("one_engine", time.perf_counter() - t, shared)
    t = time.perf_counter()
    apart = [run_job(job, start_engine)
             for job in prepare_jobs(compose(*overrides(args, folder, out / "one_per_run")))]
    one_per_run = mode_row("one_per_run", time.perf_counter() - t, apart)
    result = {"adapters": len(pairs), "rows": [one_engine, one_per_run],
              "one_engine_vs_one_per_run": round(one_per_run["wall_seconds"]
                                                 / one_engine["wall_seconds"], 2),
              "device": describe_device()}
    write_json_atomic(out / "bench_lora.json", result)
    return result


def render(result: dict[str, Any]) -> str:
    lines = render_modes(result["rows"])
    lines.append(f"\n{result['adapters']} adapters: one engine run is "
                 f"{result['one_engine_vs_one_per_run']}x faster than one run per adapter")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(parse_args(argv))
    print(render(result))
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    sys.exit(main())
