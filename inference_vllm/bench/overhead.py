"""`make bench-overhead`: what the pipeline itself costs, with generation taken out.

Every stage runs unmodified except generation: an instant engine (benchmark-only, defined
here, never an engine choice of the product) answers each request at once with a fixed short
text. Synthetic Chameleons-like data (dialogue context, short lines) and DMSC-like data (long
review histories) at 10k and 100k items; each workload runs in its own process, whose peak
memory is counted from the run's start (the workload's generation before it is left out).
Writes outputs/bench/overhead.json.

The share is the wall time the pipeline adds to generation, over the generation time of an 8B
model on one H100 at the stated 10,000 samples/min: the time before the engine is started
(loading the data, the resume check, the tokenizer), any prompt building slower than generation
(it runs beside it, in its own thread), waiting after the last sample for the user files still
queued for their writer thread and for the scores computed beside generation, and the stages
after it (merge, metrics, report). The writer thread's own time (`user_writes`) is shown but not
counted: the engine loop does not wait for it.

The libraries a real engine imports as part of its load (torch, transformers' tokenizer and
config machinery; seconds here) are imported before the clock starts, by loading the tokenizer
once: the share leaves the engine's load out, and so its imports. The run's own tokenizer load
is timed. Stage times are wall times: on this machine the prompt thread, the writer thread, the
scoring workers and the engine loop share two cores and one interpreter lock, so each stage
includes waiting for the others. Time to the first request is reported beside the share: a real
engine loads for tens of seconds meanwhile, so on a GPU it is not time the GPU waits.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from inference_core.engine import Completion, GenerationRequest, SamplingSettings

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
SAMPLES_PER_MIN_8B_H100 = 10_000
WORDS = ("well", "no", "you know", "listen", "honestly", "maybe", "look", "sure")
WORKLOADS = {  # name: (sample dataset, items per user, history items per user)
    "chameleons": ("Chameleons", 2, 12),
    "dmsc": ("DMSC", 1, 300),
}


class InstantEngine:
    """Benchmark-only: every request answered at once with short texts, each sample its own
    (identical samples would let the metrics score each item once and look cheaper than they
    are)."""

    name = "instant (benchmark only)"
    load_seconds = 0.0

    def __init__(self, model_path: str = "", engine_cfg: Any = None, seed: int = 0,
                 adapters: Sequence[Any] = ()) -> None:
        self.first_request_at: float | None = None
        self.requests = 0

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        for r in requests:
            if self.first_request_at is None:
                self.first_request_at = time.perf_counter()
            self.requests += 1
            n = r.num_samples
            texts = tuple(f"{WORDS[(self.requests + j) % len(WORDS)]} line number {j} of "
                          f"request {self.requests}" for j in range(n))
            yield Completion(r.request_id, texts, ("stop",) * n, (8,) * n, len(r.token_ids),
                             (None,) * n)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests}

    def close(self) -> None:
        pass


def sample_items(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every data item of the sample dataset, and its user records (profiles to reuse)."""
    items, records = [], []
    for name in ("train.json", "test_leaderboard.json"):
        for record in orjson.loads((folder / name).read_bytes()):
            records.append(record)
            for col in record["task"]["task_behavior_collections"]:
                items += [i for i in col["data"] if i.get("continuation")]
    return items, records


def write_workload(name: str, total_items: int, target: Path, seed: int = 0) -> Path:
    """A dataset of `total_items` test items resampled from the sample, numeric timestamps,
    written a user at a time (DMSC-like 100k items are 30M history items, 6.5 GB of JSON)."""
    from inference_core.rundir.writers import json_array_atomic

    sample, per_user, history = WORKLOADS[name]
    items, records = sample_items(REPO / "data" / sample)
    rng = random.Random(seed)
    target.mkdir(parents=True, exist_ok=True)
    with json_array_atomic(target / "train.json", indent=False, durable=False) as train, \
            json_array_atomic(target / "test_leaderboard.json", indent=False,
                              durable=False) as test:
        for u in range(max(1, total_items // per_user)):
            write_user(rng, u, records, items, per_user, history, train, test)
    return target


def write_user(rng: random.Random, u: int, records: list[dict[str, Any]],
               items: list[dict[str, Any]], per_user: int, history: int,
               train: Callable[[Any], None], test: Callable[[Any], None]) -> None:
    """One synthetic user: a sample user's profile and task, resampled history and test items."""
    template = rng.choice(records)
    user = {"profile": {**template["user"]["profile"],
                        "name": template["user"]["profile"].get("name", "U")},
            "personality": template["user"].get("personality")}

    def record(data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"user_hash": f"u{u:07d}", "user": user, "task": {
            "description": template["task"].get("description", ""),
            "task_behavior_collections": [{"type": "dialogue", "type_desc": "", "data": data}]}}

    past = [{**rng.choice(items), "timestamp": 1_300_000_000 + k} for k in range(history)]
    future = [dict(rng.choice(items)) for _ in range(per_user)]  # with references: scored
    train(record(past))
    test(record(future))


def measure(name: str, items: int, out: Path, num_samples: int,
            prompt_workers: int | None = None) -> dict[str, Any]:
    """One workload end to end in this process, as `python -m inference_vllm` runs it (metrics
    and report included); seconds per stage and peak memory."""
    from inference_core.compose import compose_config
    from inference_core.run import pipeline
    from inference_core.run.job import prepare_job
    from inference_core.prompts.pool import PromptPool
    from inference_core.run.prompting import load_tokenizer

    data = write_workload(name, items, out / "data" / f"{name}-{items}")
    sample = WORKLOADS[name][0]
    run_dir = out / "runs" / f"{name}-{items}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no earlier one to clear or resume
    job = prepare_job(compose_config(
        f"dataset={sample}", f"dataset.path={data}", f"output_dir={run_dir}",
        f"sampling.num_samples={num_samples}", "overwrite=true", "evaluate=true", "report=true",
        "allow_skips=true", f"prompt_workers={'null' if prompt_workers is None else prompt_workers}"))
    engine = InstantEngine()
    started: list[float] = []
    load_tokenizer(job.model_path)  # the imports a real engine's load pays: see the docstring
    reset_peak_memory()  # the peak is the run's, not the workload generation's above
    start = time.perf_counter()
    pipeline.run_job(job, lambda job, adapters: started.append(time.perf_counter()) or engine)
    total_seconds = time.perf_counter() - start
    report = orjson.loads((job.output_dir / "shards" / "0-of-1.json").read_bytes())
    after = orjson.loads((job.output_dir / "inference_summary.json").read_bytes())
    after = after["after_run_seconds"]
    stages = {"load": report["load_data_seconds"], "prompts": report["build_prompts_seconds"],
              "user_writes": report["write_seconds"], "write_wait": report["write_wait_seconds"],
              "scoring_wait": report["scoring_wait_seconds"],
              "merge": after["merge"], "metrics": after["metrics"], "report": after["report"],
              "total": total_seconds}
    samples = engine.requests * num_samples
    generation = samples / (SAMPLES_PER_MIN_8B_H100 / 60)
    first = (engine.first_request_at or start) - start
    before_engine = (started[0] if started else start) - start
    overhead = (before_engine + stages["write_wait"] + max(0.0, stages["prompts"] - generation)
                + stages["scoring_wait"] + stages["merge"] + stages["metrics"] + stages["report"])
    return {"workload": name, "items": engine.requests, "samples": samples,
            "seconds": {k: round(v, 3) for k, v in stages.items()},
            "time_to_first_request_seconds": round(first, 3),
            "before_engine_start_seconds": round(before_engine, 3),
            "per_item_ms": round(1000 * total_seconds / max(engine.requests, 1), 3),
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "prompt_workers": PromptPool.workers_for(job.prompt_workers),
            "largest_child_peak_mb": round(children_peak_mb(), 1),
            "generation_seconds_8b_h100": round(generation, 1),
            "overhead_seconds": round(overhead, 3),
            "overhead_share_8b_h100": round(overhead / generation, 4)}


def children_peak_mb() -> float:
    """The largest peak resident memory of the run's finished child processes (prompt workers,
    scoring workers)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def reset_peak_memory() -> None:
    """Count this process's peak memory afresh from here (Linux: clear_refs 5 resets VmHWM);
    where it cannot be reset the peak includes everything before."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        log.warning("peak memory could not be reset: it includes the workload's generation")


def peak_memory_mb() -> float:
    """The process's peak resident memory (VmHWM; getrusage's ru_maxrss where /proc is not)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_vllm.bench.overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--num-samples", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    parser.add_argument("--prompt-workers", type=int, default=None,
                        help="processes that build prompts (default: the run's own default)")
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "ITEMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.one:  # a child process: one workload, its row on stdout
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.out, args.num_samples,
                                 args.prompt_workers)))
        return 0
    rows = []
    for name in args.workloads:
        for items in args.items:
            done = subprocess.run([sys.executable, "-m", "inference_vllm.bench.overhead", "--one",
                                   name, str(items), "--out", str(args.out), "--num-samples",
                                   str(args.num_samples)]
                                  + ([] if args.prompt_workers is None
                                     else ["--prompt-workers", str(args.prompt_workers)]),
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} at {items} items failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            log.warning("%s", rows[-1])
    result = {"engine": InstantEngine.name, "samples_per_min_8b_h100": SAMPLES_PER_MIN_8B_H100,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(render(rows))
    return 0


def render(rows: list[dict[str, Any]]) -> str:
    head = (f"{'workload':<11} {'items':>7} {'load':>6} {'prompts':>8} {'writes':>7} {'w-wait':>6} "
            f"{'scoring':>8} {'merge':>6} {'metrics':>8} {'report':>7} {'engine@':>8} "
            f"{'1st req':>8} {'ms/item':>8} {'peak MB':>8} {'share':>7}")
    lines = [head]
    for r in rows:
        s = r["seconds"]
        lines.append(f"{r['workload']:<11} {r['items']:>7} {s['load']:>6.1f} {s['prompts']:>8.1f} "
                     f"{s['user_writes']:>7.1f} {s['write_wait']:>6.1f} "
                     f"{s['scoring_wait']:>8.1f} {s['merge']:>6.1f} "
                     f"{s['metrics']:>8.1f} {s['report']:>7.1f} "
                     f"{r['before_engine_start_seconds']:>8.2f} "
                     f"{r['time_to_first_request_seconds']:>8.2f} "
                     f"{r['per_item_ms']:>8.2f} {r['peak_memory_mb']:>8.0f} "
                     f"{r['overhead_share_8b_h100']:>7.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
