"""What the one-start benches share: a mode's row from the run folders it wrote, and the table.

A mode is one way of running the same jobs (one engine start for all, or one start each); its
engine starts are told apart by the `engine_session` id every summary records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from inference_core.rundir.facts import throughput
from inference_core.rundir.writers import SUMMARY_FILE, read_json


def mode_row(name: str, seconds: float, folders: Sequence[Path]) -> dict[str, Any]:
    summaries = [read_json(folder / SUMMARY_FILE) for folder in folders]
    starts = {s["engine_session"]["id"]: s["engine_session"]["load_seconds"] for s in summaries}
    samples = sum(s["samples_generated"] for s in summaries)
    return {"mode": name, "wall_seconds": round(seconds, 2), "engine_starts": len(starts),
            "engine_start_seconds": [round(v, 2) for v in starts.values()],
            "jobs": len(folders), "samples": samples,
            "samples_per_sec_wall": round(throughput(samples, seconds), 3)}


def render_modes(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| mode | wall s | engine starts | start s (each) | samples | samples/s (wall) |",
             "|---|---:|---:|---|---:|---:|"]
    return lines + [f"| {r['mode']} | {r['wall_seconds']} | {r['engine_starts']} | "
                    f"{', '.join(map(str, r['engine_start_seconds']))} | {r['samples']} | "
                    f"{r['samples_per_sec_wall']} |" for r in rows]
