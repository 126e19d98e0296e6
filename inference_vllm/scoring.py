"""vLLM's side of scoring: a request's prompt log-probabilities, read only where they are new.

vLLM computes prompt log-probabilities for every prompt row a step prefills, and skips reading
the prefix cache for such a request (cached rows would have none). On the CPU build the LM head
over every row costs more than the prefill itself (measured: docs/benchmarks.md). So where prefix
caching is on, a scoring request's context is prefilled first by a plain one-token request, and
the scoring request then reads it from the cache (`skip_reading_prefix_cache=False`): only the
rows after the cached blocks are computed, the target's among them. vLLM leaves the cached rows
unfilled, so a result is kept only where the cache stopped before the target; otherwise that
request is scored again without reading the cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference_core.engine import Request, ScoringRequest, TokenScores


@dataclass(frozen=True)
class Submission:
    """One request to add to the engine: a caller's request, or a context's warm-up (None)."""

    key: str
    token_ids: list[int]
    params: Any
    adapter: str | None
    request: Request | None


def scoring_params(request: ScoringRequest, read_cache: bool) -> Any:
    """The prompt's own log-probabilities (the actual token's, with its rank: 1 is the top
    choice) and one throwaway greedy token, or the asked next-token ids' there. Raw logits
    (vLLM's default logprobs_mode): no temperature or penalty touches them; nothing decoded."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                          logprob_token_ids=list(request.next_token_ids) or None,
                          skip_reading_prefix_cache=not read_cache,
                          output_kind=RequestOutputKind.FINAL_ONLY)


def warm_up_params() -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                          output_kind=RequestOutputKind.FINAL_ONLY)


class ScoringPlan:
    """Which engine requests a stream's scoring requests become, and what their outputs give."""

    def __init__(self, read_cache: bool) -> None:
        self.read_cache = read_cache
        self.waiting: dict[str, list[ScoringRequest]] = {}  # warm-up key -> its requests
        self.warming: dict[tuple[Any, ...], str] = {}  # (adapter, context) -> warm-up key
        self.rescored = 0  # cache hits that reached a target: scored again without the cache

    def submit(self, request: ScoringRequest) -> list[Submission]:
        """The request itself, or (once per context in flight) its context's warm-up."""
        if not self.read_cache:
            return [self.scoring(request, read_cache=False)]
        context = (request.adapter, *request.token_ids[:request.target_start])
        key = self.warming.get(context)
        if key is not None:
            self.waiting[key].append(request)
            return []
        key = self.warming[context] = f"warm-{request.request_id}"
        self.waiting[key] = [request]
        return [Submission(key, list(context[1:]), warm_up_params(), request.adapter, None)]

    def warmed(self, key: str) -> list[Submission]:
        """A warm-up finished: its context is cached; its requests go in now."""
        requests = self.waiting.pop(key)
        first = requests[0]
        self.warming.pop((first.adapter, *first.token_ids[:first.target_start]), None)
        return [self.scoring(r, read_cache=True) for r in requests]

    def result(self, submission: Submission, out: Any) -> TokenScores | Submission:
        """The scores, or the request again without the cache where the cache reached it."""
        request = submission.request
        assert isinstance(request, ScoringRequest)
        if submission.params.skip_reading_prefix_cache is False and (
                (out.num_cached_tokens or 0) >= request.target_start):
            self.rescored += 1
            return self.scoring(request, read_cache=False)
        return to_scores(request, out)

    @staticmethod
    def scoring(request: ScoringRequest, read_cache: bool) -> Submission:
        return Submission(request.request_id, list(request.token_ids),
                          scoring_params(request, read_cache), request.adapter, request)


def to_scores(request: ScoringRequest, out: Any) -> TokenScores:
    """The target rows of the prompt log-probabilities: row p holds token p given the ones
    before it."""
    rows = out.prompt_logprobs or []
    ids = list(request.token_ids)
    logprobs, greedy = [], []
    for position in range(request.target_start, len(ids)):
        entry = rows[position][ids[position]]
        logprobs.append(float(entry.logprob))
        greedy.append(entry.rank == 1)
    following: tuple[float, ...] = ()
    if request.next_token_ids:
        step = out.outputs[0].logprobs[0]
        following = tuple(float(step[t].logprob) for t in request.next_token_ids)
    return TokenScores(request.request_id, tuple(logprobs), tuple(greedy), following)
