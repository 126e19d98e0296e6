"""`python -m inference_vllm.bench.leaderboard`: a leaderboard's ablations through one engine
start vs one start per ablation (what a Hydra sweep does), on the same prompts.

  one_start        `ablations=all`: one vLLM start, every ablation's requests in one stream
  per_job_starts   one run, and one engine start, per ablation, one after another

Both run the real pipeline in this process, one after the other; times are wall clock, engine
starts included (the saving is the starts: on GPUs each is weights plus CUDA-graph capture).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from inference_core.compose import compose_config
from inference_core.rundir.facts import describe_device, versions
from inference_core.rundir.writers import write_json_atomic
from inference_core.run.job import prepare_jobs
from inference_core.run.pipeline import run_job, run_jobs

from inference_vllm.bench.starts import mode_row, render_modes

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.bench.leaderboard",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="Chameleons")
    p.add_argument("--ablations", default="all",
                   help="all, or a comma-separated list (default: all seven)")
    p.add_argument("--num-samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-users", type=int, default=None, help="first K users only")
    p.add_argument("--model-path", default=None, help="checkpoint (default: the embedded model)")
    p.add_argument("--out", default="outputs/bench")
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, root: Path) -> list[str]:
    ablations = args.ablations if args.ablations == "all" else f"[{args.ablations}]"
    model = [f"model.path={Path(args.model_path).resolve()}"] if args.model_path else []
    return [f"dataset={args.dataset}", f"ablations={ablations}", *model,
            f"sampling.num_samples={args.num_samples}", f"sampling.max_tokens={args.max_tokens}",
            f"output_dir={root}/${{ablation.name}}", f"max_users={args.max_users or 'null'}",
            "overwrite=true", "evaluate=false", "report=false", "allow_skips=true"]


def warm_up() -> None:
    """The imports a process pays once (vLLM, Transformers' model classes): paid before either
    mode is timed, so that the first mode does not carry them."""
    import vllm  # noqa: F401
    from transformers import AutoModelForCausalLM  # noqa: F401


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve()
    root = out / "leaderboard_runs"
    warm_up()
    t = time.perf_counter()
    shared = run_jobs(prepare_jobs(compose_config(*overrides(args, root / "one_start"))))
    one = mode_row("one_start", time.perf_counter() - t, shared)
    t = time.perf_counter()
    apart = [run_job(job) for job in prepare_jobs(compose_config(
        *overrides(args, root / "per_job_starts")))]
    each = mode_row("per_job_starts", time.perf_counter() - t, apart)
    result = {"dataset": args.dataset, "jobs": one["jobs"],
              "one_start_seconds": one["wall_seconds"],
              "per_job_starts_seconds": each["wall_seconds"],
              "per_job_starts_vs_one_start": round(each["wall_seconds"] / one["wall_seconds"], 2),
              "rows": [one, each], "workload": vars(args),
              "device": describe_device(), "versions": versions()}
    write_json_atomic(out / "leaderboard.json", result)
    return result


def render(result: dict[str, Any]) -> str:
    lines = render_modes(result["rows"])
    lines.append(f"\n{result['jobs']} ablations of {result['dataset']}: one engine start is "
                 f"{result['per_job_starts_vs_one_start']}x faster than one start per ablation")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(parse_args(argv))
    print(render(result))
    return 0


if __name__ == "__main__":  # vLLM spawns its engine process: the entry must be guarded
    sys.exit(main())
