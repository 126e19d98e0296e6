"""`make compare`: both engines on the same prompts, greedy, one sample; one table.

    python -m inference_hf.compare [--dataset Chameleons] [--ablation ...] [--max-tokens 32]
                                   [--model-path DIR] [overrides...]

Prints model load seconds, samples/s, output tokens/s and the share of items whose greedy
outputs match exactly, and the machine it ran on.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Sequence

from inference_core.compose import compose_config, engine_settings
from inference_core.engine import Engine, GenerationRequest, start_engine
from inference_core.run.job import Job, prepare_job
from inference_core.run.prompting import all_prompts
from inference_core.rundir.facts import describe_device, throughput

log = logging.getLogger(__name__)


def compose_job(args: argparse.Namespace) -> Job:
    overrides = [f"dataset={args.dataset}", f"ablation={args.ablation}",
                 "sampling=greedy", f"sampling.max_tokens={args.max_tokens}", *args.overrides]
    if args.model_path:
        overrides += ["model=finetuned_8b", f"model.path={args.model_path}"]
    return prepare_job(compose_config(*overrides))


def requests_of(job: Job) -> list[GenerationRequest]:
    return [GenerationRequest(str(i), p.token_ids, 1) for i, p in enumerate(all_prompts(job))]


def measure(engine: Engine, job: Job, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
    start = time.perf_counter()
    done = {c.request_id: c for c in engine.generate(requests, job.sampling)}
    seconds = time.perf_counter() - start
    tokens = sum(sum(c.output_tokens) for c in done.values())
    return {"engine": engine.name, "model_load_seconds": engine.load_seconds,
            "seconds": seconds, "samples_per_sec": throughput(len(done), seconds),
            "output_tokens_per_sec": throughput(tokens, seconds),
            "texts": {rid: c.texts[0] for rid, c in done.items()}}


def run(job: Job) -> list[dict[str, Any]]:
    """The job's own engine (vLLM by default), then the Transformers engine, on the same prompts."""
    requests = requests_of(job)
    rows = []
    for cfg in (job.engine_cfg, engine_settings("hf", job.max_model_len)):
        engine = start_engine(cfg, str(job.model_path), job.sampling.seed)
        try:
            rows.append(measure(engine, job, requests))
        finally:
            engine.close()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    reference = rows[0]["texts"]
    lines = [f"{'engine':<8} {'load s':>8} {'gen s':>8} {'samples/s':>10} {'out tok/s':>10} "
             f"{'greedy match':>13}"]
    for row in rows:
        same = sum(row["texts"][k] == v for k, v in reference.items())
        lines.append(f"{row['engine']:<8} {row['model_load_seconds']:>8.1f} {row['seconds']:>8.1f} "
                     f"{row['samples_per_sec']:>10.2f} {row['output_tokens_per_sec']:>10.1f} "
                     f"{f'{same}/{len(reference)} ({same / len(reference):.0%})':>13}")
    device = describe_device()
    lines.append(f"machine: {device['cpu']}, {device['cpu_count']} cores, "
                 f"GPUs: {', '.join(device['gpus']) or 'none'}; {len(reference)} prompts")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_hf.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Chameleons")
    parser.add_argument("--ablation", default="profile_and_history_and_context")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides, e.g. max_users=3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(render(run(compose_job(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
