"""Likelihood scoring through /completions: `echo` with `logprobs` returns the prompt's own tokens'
log-probabilities (one prefill, no decoding), as lm-evaluation-harness's `loglikelihood` asks
OpenAI-style servers.

The request (vLLM 0.32: entrypoints/openai/completion/protocol.py, CompletionRequest):
the prompt as token ids (exact: no re-tokenization), `echo: true`, `logprobs: 1` (the top-1 entry
tells whether a token was the greedy choice), `max_tokens: 1` (vLLM generates one token for
`max_tokens: 0` as well, see `echo_without_generation` there, and refuses `logprob_token_ids`
with 0), `temperature: 0`. On vLLM also `return_tokens_as_token_ids` (top-logprob keys are
`token_id:N`, never ambiguous strings) and `logprob_token_ids` (the log-probabilities of given
tokens at the generated position: the next-token distribution after the prompt).

The answer (completion/serving.py, `_create_completion_logprobs`): `choices[0].logprobs` with
`tokens`, `token_logprobs` and `top_logprobs`, one entry per prompt token (the first null: it has
no context) and one for the generated token, which is dropped. Values are vLLM's raw log-softmax
(`logprobs_mode: raw_logprobs`, before temperature or penalties), clamped at -9999.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from inference_core.config import ConfigError
from inference_core.engine import ScoringRequest, TokenScores
from inference_openai.payload import BodyOptions
from inference_openai.stats import EndpointStats
from inference_openai.transport import RequestFailed

Post = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# The probe's sequence: ids this small exist in every vocabulary.
PROBE_IDS = (1, 2)
PROBE_NEXT = (3,)
TOKEN_ID_PREFIX = "token_id:"


@dataclass(frozen=True)
class PromptScores:
    logprobs: tuple[float, ...]
    greedy: tuple[bool, ...]


def scoring_body(token_ids: Sequence[int], options: BodyOptions,
                 next_token_ids: Sequence[int] = ()) -> dict[str, Any]:
    """One prefill that echoes the prompt's log-probabilities."""
    body: dict[str, Any] = {"model": options.model, "prompt": list(token_ids), "echo": True,
                            "logprobs": 1, "max_tokens": 1, "temperature": 0, "n": 1}
    if options.extended_sampling:
        body["return_tokens_as_token_ids"] = True
        if next_token_ids:
            body["logprob_token_ids"] = list(next_token_ids)
    body.update(options.extra_body)
    return body


def logprobs_of(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = answer.get("choices") or []
    logprobs = choices[0].get("logprobs") if choices and isinstance(choices[0], dict) else None
    if not isinstance(logprobs, dict):
        raise RequestFailed("the answer has no choices[0].logprobs (no prompt log-probabilities)")
    return logprobs


def prompt_scores(answer: Mapping[str, Any], token_ids: Sequence[int],
                  target_start: int) -> PromptScores:
    """The log-probability of each of token_ids[target_start:] and whether it was the top one."""
    found = logprobs_of(answer)
    values, tops = found.get("token_logprobs") or [], found.get("top_logprobs") or []
    tokens = found.get("tokens") or []
    n = len(token_ids)
    if len(values) < n or len(tops) < n:
        raise RequestFailed(f"the answer holds {len(values)} token_logprobs and {len(tops)} "
                            f"top_logprobs for a prompt of {n} tokens (no prompt "
                            f"log-probabilities: does the server honour echo?)")
    check_echoed_ids(tokens[:n], token_ids)
    logprobs, greedy = [], []
    for j in range(target_start, n):
        value, top = values[j], tops[j]
        if not isinstance(value, (int, float)) or not isinstance(top, dict) or not top:
            raise RequestFailed(f"prompt position {j} has no log-probability in the answer")
        logprobs.append(float(value))
        # A tie with the top entry counts as greedy: the values are the server's own floats.
        greedy.append(value >= max(top.values()))
    return PromptScores(tuple(logprobs), tuple(greedy))


def check_echoed_ids(tokens: Sequence[Any], token_ids: Sequence[int]) -> None:
    """Where the server names tokens by id (vLLM's return_tokens_as_token_ids), they must be ours."""
    for j, (token, sent) in enumerate(zip(tokens, token_ids)):
        if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX) \
                and token[len(TOKEN_ID_PREFIX):] != str(sent):
            raise RequestFailed(f"the server scored other tokens than sent (position {j}: "
                                f"{token}, sent {sent})")


def next_scores(answer: Mapping[str, Any], n: int, next_token_ids: Sequence[int]) -> tuple[float, ...]:
    """The asked tokens' log-probabilities at the generated position (vLLM's logprob_token_ids)."""
    tops = logprobs_of(answer).get("top_logprobs") or []
    generated = tops[n] if len(tops) > n and isinstance(tops[n], dict) else {}
    try:
        return tuple(float(generated[f"{TOKEN_ID_PREFIX}{x}"]) for x in next_token_ids)
    except KeyError as missing:
        raise RequestFailed(f"the answer has no log-probability for next token {missing}") from None


class Scorer:
    """Scoring requests against one endpoint: the probe, then one prefill per request."""

    def __init__(self, post: Post, options: BodyOptions, counters: EndpointStats,
                 endpoint: str) -> None:
        self.post = post
        self.options = options
        self.counters = counters
        self.endpoint = endpoint
        # Whether the endpoint returns given tokens' log-probabilities at the next position
        # (vLLM's logprob_token_ids); without it, each next token is scored appended to the prompt.
        self.native_next = False

    async def probe(self) -> None:
        """One tiny scoring request: ConfigError naming the endpoint when it cannot score."""
        want_next = PROBE_NEXT if self.options.extended_sampling else ()
        try:
            answer = await self.post(scoring_body(PROBE_IDS, self.options, want_next))
            prompt_scores(answer, PROBE_IDS, 1)
        except RequestFailed as failed:
            raise ConfigError(
                f"engine.base_url={self.endpoint} cannot score (likelihood mode): POST "
                f"/completions with a token-id prompt, echo and logprobs: {failed}") from None
        if want_next:
            try:
                next_scores(answer, len(PROBE_IDS), want_next)
                self.native_next = True
            except RequestFailed:  # an older vLLM ignores logprob_token_ids: fall back
                pass

    async def score(self, request: ScoringRequest) -> TokenScores:
        ids, next_ids = list(request.token_ids), tuple(request.next_token_ids)
        try:
            answer = await self.ask(scoring_body(ids, self.options,
                                                 next_ids if self.native_next else ()))
            scores = prompt_scores(answer, ids, request.target_start)
            if not next_ids:
                next_lps: tuple[float, ...] = ()
            elif self.native_next:
                next_lps = next_scores(answer, len(ids), next_ids)
            else:
                next_lps = await self.appended(ids, next_ids)
        except RequestFailed as failed:
            self.counters.failed_requests += 1
            return TokenScores(request.request_id, (), (), error=str(failed))
        self.counters.scoring_requests += 1
        self.counters.scored_tokens += len(scores.logprobs)
        return TokenScores(request.request_id, scores.logprobs, scores.greedy, next_lps)

    async def appended(self, ids: list[int], next_ids: tuple[int, ...]) -> tuple[float, ...]:
        """Each next token's log-probability as the last token of prompt + [token]: exact on any
        endpoint that echoes, at one more prefill per token."""
        self.counters.next_token_requests += len(next_ids)
        answers = await asyncio.gather(
            *(self.ask(scoring_body(ids + [x], self.options)) for x in next_ids))
        return tuple(prompt_scores(a, ids + [x], len(ids)).logprobs[0]
                     for a, x in zip(answers, next_ids))

    async def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.post(body)
        self.counters.usage(answer)
        return answer

    def method(self) -> str:
        return "logprob_token_ids" if self.native_next else "one request per token"


def check_request(request: ScoringRequest) -> None:
    if not 1 <= request.target_start < len(request.token_ids):
        raise ValueError(f"scoring request {request.request_id}: target_start="
                         f"{request.target_start} is outside 1..{len(request.token_ids) - 1}")
