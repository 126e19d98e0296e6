"""engine=openai against a real `vllm serve` of the embedded model (conftest's `vllm_server`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, REPO, assert_well_formed
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_openai.engine import OpenAIEngine
from openai_server import API_KEY, KEY_ENV, SERVED_ID, engine_cfg
from test_interrupts import assert_no_torn_json, wait_for_user_file
from test_vllm_pipeline import assert_complete_run

pytestmark = pytest.mark.engine
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"
SAMPLING = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50, max_tokens=16,
                            seed=42)


def chat_requests(tokenizer: Any) -> list[GenerationRequest]:
    requests = []
    for i, line in enumerate(["Say hello to Dante.", "What is a movie?", "Name a colour."]):
        messages = ({"role": "system", "content": "You answer in one short sentence."},
                    {"role": "user", "content": line})
        text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                             add_generation_prompt=True)
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        requests.append(GenerationRequest(str(i), ids, 2, messages=messages))
    return requests


@pytest.mark.parametrize("overrides", [
    {"api": "completions", "prompt": "text"},
    {"api": "completions", "prompt": "token_ids"},
    {"api": "chat"},
], ids=["completions-text", "completions-ids", "chat"])
def test_every_api_gives_well_formed_completions(vllm_server: str, model_path: Path,
                                                 tokenizer: Any, with_key: None,
                                                 overrides: dict[str, Any]) -> None:
    requests = chat_requests(tokenizer)
    engine = OpenAIEngine(str(model_path), engine_cfg(vllm_server, **overrides), seed=42)
    try:
        completions = {c.request_id: c for c in engine.generate(iter(requests), SAMPLING)}
        stats = engine.stats()
    finally:
        engine.close()
    assert completions.keys() == {r.request_id for r in requests}
    for r in requests:
        c = completions[r.request_id]
        assert c.error is None
        assert_well_formed(c, r, 2, SAMPLING.max_tokens)
        assert len(c.stop_reasons) == 2
    assert stats["extended_sampling"] is True and stats["n_per_request"] is True
    assert stats["http_requests"] == len(requests) and stats["retries"] == 0
    assert stats["usage"]["completion_tokens"] == sum(
        sum(c.output_tokens) for c in completions.values())


def run_command(url: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "inference_vllm", "engine=openai", f"engine.base_url={url}",
            f"engine.model={SERVED_ID}", f"engine.api_key_env={KEY_ENV}",
            "engine.max_concurrency=2", f"output_dir={out}", "sampling.num_samples=2",
            "sampling.max_tokens=16", "evaluate=false", "report=false"]


def test_a_killed_run_resumes_to_the_end_and_the_key_is_nowhere(vllm_server: str,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, KEY_ENV: API_KEY}
    proc = subprocess.Popen(run_command(vllm_server, out), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for_user_file(proc, out, timeout=300)
    os.killpg(proc.pid, signal.SIGKILL)
    first_out, first_err = proc.communicate(timeout=60)
    assert_no_torn_json(out)
    done_before = len(list((out / "users").glob("*.json")))
    assert not (out / "test_leaderboard.json").exists(), "finished before the kill: nothing resumed"

    again = subprocess.run(run_command(vllm_server, out), cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming: {done_before} users already finished" in again.stdout + again.stderr
    summary = assert_complete_run(out, TEST_FILE, 2)
    assert summary["skipped_items"] == []
    assert summary["engine"] == "openai"
    stats = summary["shards"][0]["engine_stats"]
    assert stats["model"] == SERVED_ID and stats["endpoint"] == vllm_server.rsplit("/v1", 1)[0]
    logs = first_out + first_err + again.stdout + again.stderr
    assert API_KEY not in logs
    for path in out.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path

