"""The Transformers engine's loglikelihood (inference_hf/scoring.py) against plain forwards.

A 2-layer Qwen3 of random weights, saved with the embedded model's tokenizer and loaded by
HFEngine as any checkpoint, stands in for a model: scoring runs unchanged over it in seconds.
Its LM head is drawn wide (std 0.5) so each distribution is peaked: a score read at the wrong
position or of the wrong token is off by whole nats, not by the noise of a near-uniform head.
Everything is float32, where the only difference padding and batch shape make is summation
order: a few ulps of values around -20 (2e-6 each), hence the 1e-5 tolerance.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import pytest

from inference_core.config import ConfigError
from inference_core.engine import ScoringRequest, TokenScores
from inference_hf import scoring
from inference_hf.engine import HFEngine

SHAPE = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
         "tie_word_embeddings": False}
CPU32 = {"device": "cpu", "dtype": "float32"}
TOL = {"abs": 1e-5, "rel": 1e-6}


def tiny_model(vocab: int, kind: str = "qwen3", **extra: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, vocab_size=vocab, **SHAPE, **extra)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                             attn_implementation="sdpa")
    with torch.no_grad():
        model.get_output_embeddings().weight.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    folder = tmp_path_factory.mktemp("tiny_qwen3")
    tiny_model(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[HFEngine]:
    engine = HFEngine(str(tiny_dir), {**CPU32, "max_batch_tokens": 10_000}, seed=0)
    yield engine
    engine.close()


def plain_logprobs(model: Any, ids: tuple[int, ...]) -> Any:
    """What scoring must match: the model's own logits over the sequence alone, log-softmaxed."""
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)


def expected(model: Any, request: ScoringRequest) -> TokenScores:
    logprobs = plain_logprobs(model, tuple(request.token_ids))
    at = range(request.target_start, len(request.token_ids))
    return TokenScores(request.request_id,
                       tuple(logprobs[j - 1, request.token_ids[j]].item() for j in at),
                       tuple(int(logprobs[j - 1].argmax()) == request.token_ids[j] for j in at),
                       tuple(logprobs[-1, k].item() for k in request.next_token_ids))


def with_greedy_tail(model: Any, ids: list[int], steps: int) -> list[int]:
    """ids and the model's own greedy continuation: targets that are the argmax, beside others."""
    for _ in range(steps):
        ids = ids + [int(plain_logprobs(model, tuple(ids))[-1].argmax())]
    return ids


def request_set(model: Any, vocab: int, seed: int = 1, adapter: str | None = None,
                prefix: str = "r") -> list[ScoringRequest]:
    """Sequences of 6 to 32 tokens: random context, a greedy stretch, random tokens again."""
    import torch

    draw = torch.Generator().manual_seed(seed)
    requests = []
    for i, length in enumerate((4, 9, 17, 27)):
        context = torch.randint(0, vocab, (length,), generator=draw).tolist()
        ids = with_greedy_tail(model, context, 3)
        ids += torch.randint(0, vocab, (2,), generator=draw).tolist()
        options = tuple(torch.randint(0, vocab, (i,), generator=draw).tolist())
        requests.append(ScoringRequest(f"{prefix}{i}", tuple(ids), length // 2 + 1, adapter,
                                       options))
    return requests


def score(engine: HFEngine, requests: list[ScoringRequest]) -> dict[str, TokenScores]:
    out = list(engine.loglikelihood(requests))
    assert len(out) == len(requests)
    return {s.request_id: s for s in out}


def assert_same(got: TokenScores, want: TokenScores) -> None:
    assert got.error is None and got.request_id == want.request_id
    assert got.logprobs == pytest.approx(want.logprobs, **TOL)
    assert got.greedy == want.greedy
    assert got.next_logprobs == pytest.approx(want.next_logprobs, **TOL)


def test_scores_equal_a_plain_forward_of_each_sequence(engine: HFEngine) -> None:
    requests = request_set(engine.model, len(engine.tokenizer))
    before = engine.stats().get("scoring_batches", 0)
    got = score(engine, requests)
    assert engine.stats()["scoring_batches"] - before == 2  # 4-token context under half the longest
    for request in requests:
        want = expected(engine.model, request)
        assert_same(got[request.request_id], want)
        assert len(want.logprobs) == request.target_tokens
        assert len(want.next_logprobs) == len(request.next_token_ids)
    flags = [flag for s in got.values() for flag in s.greedy]
    assert any(flags) and not all(flags)  # the greedy stretches are flagged, the rest not
    assert engine.stats()["scored_tokens"] >= sum(r.target_tokens for r in requests)


def test_batch_composition_and_order_leave_scores_unchanged(
        engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    requests = request_set(engine.model, len(engine.tokenizer), seed=2)
    together = score(engine, requests)
    alone = {r.request_id: score(engine, [r])[r.request_id] for r in requests}
    # Under two rows of the longest: [r3], [r2, r1], [r0] where one call made [r3, r2], [r1, r0].
    longest = max(len(r.token_ids) for r in requests)
    monkeypatch.setattr(engine, "max_batch_tokens", 2 * longest - 1)
    before = engine.stats()["scoring_batches"]
    reordered = score(engine, requests[::-1])
    assert engine.stats()["scoring_batches"] - before == 3
    for request in requests:
        assert_same(reordered[request.request_id], together[request.request_id])
        assert_same(alone[request.request_id], together[request.request_id])


def test_request_over_the_budget_is_scored_alone(engine: HFEngine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    requests = request_set(engine.model, len(engine.tokenizer), seed=3)
    monkeypatch.setattr(engine, "max_batch_tokens", 4)  # under every request's length
    before = engine.stats()["scoring_batches"]
    got = score(engine, requests)
    assert engine.stats()["scoring_batches"] - before == len(requests)
    for request in requests:
        assert_same(got[request.request_id], expected(engine.model, request))


def test_out_of_memory_alone_is_that_request_s_error_and_the_others_are_scored(
        engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    requests = request_set(engine.model, len(engine.tokenizer), seed=4)
    huge = requests[-1].request_id
    score_batch = scoring.score_batch
    seen = []

    def out_of_memory_with_huge(head: Any, batch: list[ScoringRequest], *args: Any) -> Any:
        seen.append(sorted(r.request_id for r in batch))
        if any(r.request_id == huge for r in batch):
            raise torch.OutOfMemoryError("out of memory (injected by the test)")
        return score_batch(head, batch, *args)

    monkeypatch.setattr(scoring, "score_batch", out_of_memory_with_huge)
    splits = engine.stats()["scoring_oom_splits"]
    got = score(engine, requests)
    assert got[huge].error == f"out of memory scoring request {huge} alone (32 tokens)"
    assert got[huge].logprobs == ()
    for request in requests[:-1]:
        assert_same(got[request.request_id], expected(engine.model, request))
    assert engine.stats()["scoring_oom_splits"] - splits == 1  # [r2, r3] halved; r3 alone fails
    assert ["r2", "r3"] in seen and ["r3"] in seen and ["r2"] in seen


def test_request_that_cannot_be_scored_is_one_line_and_the_others_go_on(
        engine: HFEngine) -> None:
    vocab = len(engine.tokenizer)
    good = request_set(engine.model, vocab, seed=5)[:2]
    no_context = ScoringRequest("no_context", (5, 6, 7), 0)
    no_target = ScoringRequest("no_target", (5, 6, 7), 3)
    bad_option = ScoringRequest("bad_option", (5, 6, 7), 1, next_token_ids=(vocab,))
    got = score(engine, [no_context, *good, no_target, bad_option])
    assert got["no_context"].error == "request no_context: target_start 0 is not in 1..2 (3 tokens)"
    assert got["no_target"].error == "request no_target: target_start 3 is not in 1..2 (3 tokens)"
    assert got["bad_option"].error == (f"request bad_option: next_token_ids outside the "
                                       f"vocabulary (0..{vocab - 1})")
    for request in good:
        assert_same(got[request.request_id], expected(engine.model, request))


def test_each_request_is_scored_under_its_own_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from inference_core.model.adapters import read_adapter
    from inference_vllm.bench.lora import make_random_adapter

    adapter = read_adapter(make_random_adapter(tiny_dir, tmp_path / "lora", seed=0), None)
    engine = HFEngine(str(tiny_dir), CPU32, seed=0, adapters=[adapter])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype="float32").eval()
    vocab = len(engine.tokenizer)
    plain = request_set(base, vocab, seed=6)
    tuned = request_set(base, vocab, seed=6, adapter=str(adapter.path), prefix="lora")
    got = score(engine, plain + tuned)  # both kinds in one call: a batch per adapter
    engine.close()
    for request in plain:
        assert_same(got[request.request_id], expected(base, request))
    with_lora = PeftModel.from_pretrained(base, str(adapter.path)).eval()
    for request in tuned:
        assert_same(got[request.request_id], expected(with_lora, request))
        # The adapter really changes the scores.
        twin = got[request.request_id.replace("lora", "r")]
        assert got[request.request_id].logprobs != pytest.approx(twin.logprobs, abs=1e-3)


@pytest.mark.parametrize("kind,head", [("gemma3_text", {"final_logit_softcapping": 2.0}),
                                       ("granite", {"logits_scaling": 4.0})])
def test_the_model_s_own_head_transform_is_applied(kind: str, head: dict[str, float],
                                                   tokenizer: Any) -> None:
    # Logits of several nats: a cap at 2 or a division by 4 changes every score.
    model = tiny_model(len(tokenizer), kind, **head)
    engine = HFEngine.around(model, tokenizer, {"max_batch_tokens": 10_000}, seed=0)
    requests = request_set(model, len(tokenizer), seed=7)
    got = score(engine, requests)
    for request in requests:
        assert_same(got[request.request_id], expected(model, request))


def test_a_head_scoring_does_not_reproduce_is_refused(tokenizer: Any) -> None:
    # Cohere multiplies its logits by config.logit_scale, which scoring.py does not know.
    model = tiny_model(len(tokenizer), "cohere", logit_scale=0.25)
    engine = HFEngine.around(model, tokenizer, {}, seed=0)
    with pytest.raises(ConfigError, match="engine=hf cannot score CohereForCausalLM"):
        list(engine.loglikelihood([ScoringRequest("r", (5, 6, 7), 1)]))


class VocabWideTensors:
    """Records the shape of every tensor an operator returns whose last axis is the vocabulary
    (torch's dispatch mode sees each operator call, inside the model too)."""

    def __init__(self, vocab: int) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        self.vocab = vocab
        self.shapes: list[tuple[int, ...]] = []
        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                                   kwargs: Any = None) -> Any:
                out = func(*args, **(kwargs or {}))
                recorder.record(out)
                return out

        self.mode = Mode()

    def record(self, out: Any) -> None:
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if getattr(tensor, "ndim", 0) and tensor.shape[-1] == self.vocab:
                self.shapes.append(tuple(tensor.shape))

    def most_rows(self) -> int:
        return max(math.prod(shape[:-1]) for shape in self.shapes)


def test_logits_are_held_one_head_chunk_at_a_time(engine: HFEngine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = len(engine.tokenizer)
    monkeypatch.setattr(scoring, "HEAD_CHUNK_BYTES", 8 * 4 * vocab)  # 8 rows of float32 logits
    requests = [ScoringRequest(f"r{i}", tuple(range(100 + i, 140)), 1, next_token_ids=(1, 2))
                for i in range(4)]
    recorder = VocabWideTensors(vocab)
    with recorder.mode:
        got = score(engine, requests)
    # 150 target positions and 4 last ones went through the head: never more than 8 rows at once.
    assert recorder.most_rows() == 8
    for request in requests:
        assert_same(got[request.request_id], expected(engine.model, request))


@pytest.mark.engine
def test_real_model_scores_equal_a_plain_forward(model_path: Path, tokenizer: Any) -> None:
    engine = HFEngine(str(model_path), CPU32, seed=0)
    pairs = [("What is the capital of France?", "The capital of France is Paris."),
             ("Name three primary colors.", "Red, yellow and blue."),
             ("Write a haiku about the sea.", "Waves fold into foam")]
    requests = []
    for i, (question, answer) in enumerate(pairs):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                               add_generation_prompt=True, tokenize=False)
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply = tokenizer(answer, add_special_tokens=False)["input_ids"]
        options = tuple(tokenizer(" Yes No", add_special_tokens=False)["input_ids"])
        requests.append(ScoringRequest(f"q{i}", tuple(context + reply), len(context),
                                       next_token_ids=options))
    recorder = VocabWideTensors(len(tokenizer))
    with recorder.mode:
        got = score(engine, requests)
    for request in requests:
        assert_same(got[request.request_id], expected(engine.model, request))
    # The model knows its capital: the answer's tokens are mostly its own top choices.
    assert sum(got["q0"].greedy) >= len(got["q0"].greedy) // 2
    targets = sum(r.target_tokens for r in requests)
    # At most every target row once (one chunk here), never batch x length rows.
    assert recorder.most_rows() <= targets < len(requests) * max(len(r.token_ids) for r in requests)
    engine.close()
