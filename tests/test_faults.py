"""Faults with real engines: a SIGKILLed run leaves no engine process, and the Transformers
engine's samples do not depend on the batch they ran in."""
from __future__ import annotations

import dataclasses
import inspect
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from conftest import REPO
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_core.run.reaper import running

pytestmark = pytest.mark.engine

SAMPLING = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50, max_tokens=8,
                            seed=42)
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "Name three primary colors."]
FILLER = ("I am planning a long trip through the mountains of northern Italy next summer with "
          "two friends. Which three small towns would you recommend we visit, and why?")
HAS_REQUEST_SEEDS = "seed" in {f.name for f in dataclasses.fields(GenerationRequest)}


@pytest.fixture(scope="module")
def hf_engine(model_path: Path) -> Iterator[Any]:
    from inference_hf.engine import HFEngine

    engine = HFEngine(str(model_path), {"dtype": "float32"}, seed=42)  # fp32: padding-exact
    yield engine
    engine.close()


def request(tokenizer: Any, request_id: str, question: str, seed: int) -> GenerationRequest:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                        add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    extra = {"seed": seed} if HAS_REQUEST_SEEDS else {}
    return GenerationRequest(request_id, tuple(ids), SAMPLING.num_samples, **extra)


def samples(engine: Any, requests: list[GenerationRequest], batch_size: int) -> dict[str, tuple]:
    engine.max_batch_size = batch_size
    if not HAS_REQUEST_SEEDS:
        engine.calls = 0  # without per-request seeds the fallback seeds by prompt and call
    return {c.request_id: c.texts for c in engine.generate(list(requests), SAMPLING)}


def test_hf_samples_do_not_depend_on_batch_composition_or_padding(hf_engine, tokenizer):
    asked = [request(tokenizer, f"q{i}", q, seed=1000 + i) for i, q in enumerate(QUESTIONS)]
    filler = request(tokenizer, "filler", FILLER, seed=7)
    together = samples(hf_engine, asked, batch_size=8)
    alone = samples(hf_engine, asked, batch_size=1)
    padded = samples(hf_engine, [filler, *reversed(asked)], batch_size=8)  # longer neighbour
    assert alone == together
    assert {k: padded[k] for k in together} == together
    # The two samples of an item draw from two generators (a low-entropy answer such as
    # "Paris" may still come out the same twice).
    assert any(len(set(texts)) == 2 for texts in together.values()), together
    assert hf_engine.stats()["per_request_seeds"] is True


def test_hf_top_k_1_sampling_through_the_seeded_sampler_is_greedy(hf_engine, tokenizer):
    asked = [request(tokenizer, f"q{i}", q, seed=i) for i, q in enumerate(QUESTIONS[:2])]
    greedy = SamplingSettings(num_samples=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=8,
                              seed=42)
    first = {c.request_id: c.texts[0] for c in hf_engine.generate(
        [dataclasses.replace(r, num_samples=1) for r in asked], greedy)}
    top1 = dataclasses.replace(SAMPLING, top_k=1)
    for c in hf_engine.generate(asked, top1):
        assert c.texts == (first[c.request_id],) * 2


# --- a SIGKILLed run leaves no engine processes ------------------------------------------------

def reaper_wired() -> bool:
    import inference_core.run.pipeline as pipeline
    import inference_vllm.__main__ as entry

    return any("engine_reaper" in inspect.getsource(m) for m in (pipeline, entry))


@pytest.mark.skipif(not reaper_wired(), reason="engine_reaper is not wired into the run yet "
                    "(the lead wraps engine start+run in it); tests/test_rundir.py tests the "
                    "reaper itself")
def test_sigkill_of_the_main_process_leaves_no_engine_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "inference_vllm", f"output_dir={tmp_path}",
                             "max_users=2", "sampling.max_tokens=64", "evaluate=false",
                             "report=false"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    main = psutil.Process(proc.pid)
    deadline = time.monotonic() + 240
    engine: list[psutil.Process] = []
    while not any("EngineCore" in (p.name() + " ".join(p.cmdline())) for p in engine):
        assert proc.poll() is None and time.monotonic() < deadline, "no vLLM engine came up"
        time.sleep(0.5)
        try:
            engine = main.children(recursive=True)
        except psutil.Error:
            engine = []
    time.sleep(2)  # generating now, the reaper has polled the engine's processes
    engine = [p for p in main.children(recursive=True) if "reaper" not in " ".join(p.cmdline())]
    proc.send_signal(signal.SIGKILL)  # only the main process, as the OOM killer does
    proc.wait()
    alive = engine
    for _ in range(30):  # the reaper's grace time is 5 s
        alive = [p for p in alive if running(p)]
        if not alive:
            break
        time.sleep(0.5)
    for p in alive:
        p.kill()
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
