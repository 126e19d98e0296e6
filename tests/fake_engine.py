"""An instant, deterministic engine for the pipeline's unit tests (never an engine of the product).

Sample j of a request reads "fake <seed> <j> <prompt>" where the seed is the request's own (or a
digest of its token ids) and <prompt> a digest of its token ids: two runs that ask for the same
items get the same texts, and a completion routed to another job, or built from another prompt,
reads differently. It can return blank samples on cue, fail with an error completion, raise
after some completions (a crash), be interrupted like a signal would, or take `delay` seconds
per request.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

from inference_core.engine import (Completion, GenerationRequest, SamplingSettings,
                                   ScoringRequest, TokenScores)
from inference_core.run.signals import Interrupted


class FakeEngine:
    name = "fake"
    load_seconds = 0.0

    def __init__(self, blank: Callable[[GenerationRequest, int], bool] = lambda r, j: False,
                 fail: Callable[[GenerationRequest], str | None] = lambda r: None,
                 interrupt_after: int | None = None, crash_after: int | None = None,
                 text: Callable[[int, int], str] | None = None,
                 stop_reason: Callable[[int], str | None] = lambda j: None,
                 delay: float = 0.0) -> None:
        self.text = text
        self.stop_reason = stop_reason
        self.blank = blank
        self.fail = fail
        self.interrupt_after = interrupt_after
        self.crash_after = crash_after
        self.delay = delay
        self.requests: list[GenerationRequest] = []
        self.scored: list[ScoringRequest] = []
        self.first_request_at: float | None = None
        self.closed = False
        self.calls = 0

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        self.calls += 1
        for request in requests:
            if self.first_request_at is None:
                self.first_request_at = time.perf_counter()
            self.requests.append(request)
            done = len(self.requests)
            if self.interrupt_after is not None and done > self.interrupt_after:
                raise Interrupted(15)
            if self.crash_after is not None and done > self.crash_after:
                raise RuntimeError("fake engine crashed")
            if self.delay:
                time.sleep(self.delay)
            yield self.complete(request)

    def complete(self, request: GenerationRequest) -> Completion:
        error = self.fail(request)
        if error is not None:
            return Completion(request.request_id, (), (), (), len(request.token_ids), (), error)
        prompt = hashlib.sha256(bytes(str(list(request.token_ids)), "utf-8")).digest()
        seed = request.seed if request.seed is not None else int.from_bytes(prompt[:4], "little")
        texts = tuple("" if self.blank(request, j) else self.sample(seed, j, prompt)
                      for j in range(request.num_samples))
        n = request.num_samples
        return Completion(request.request_id, texts, ("stop",) * n, (3,) * n,
                          len(request.token_ids), tuple(self.stop_reason(j) for j in range(n)))

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        """Made-up log-probabilities that depend on each token and its position (so another
        prompt or target reads differently); a token is the top choice when it is even."""
        self.calls += 1
        for request in requests:
            self.scored.append(request)
            if self.interrupt_after is not None and len(self.scored) > self.interrupt_after:
                raise Interrupted(15)
            if self.crash_after is not None and len(self.scored) > self.crash_after:
                raise RuntimeError("fake engine crashed")
            if self.delay:
                time.sleep(self.delay)
            ids = list(request.token_ids)
            target = range(request.target_start, len(ids))
            yield TokenScores(request.request_id,
                              tuple(-((ids[i] * 31 + i) % 97 + 1) / 50 for i in target),
                              tuple(ids[i] % 2 == 0 for i in target),
                              tuple(-(t % 13 + 1) / 10 for t in request.next_token_ids))

    def sample(self, seed: int, j: int, prompt: bytes) -> str:
        if self.text is not None:
            return self.text(seed, j)
        return f"fake {seed} {j} {prompt[:4].hex()}"

    def stats(self) -> dict[str, Any]:
        return {"requests": len(self.requests)}

    def close(self) -> None:
        self.closed = True


def lend(engine: FakeEngine) -> Callable[[Any, Sequence[Any]], FakeEngine]:
    """A `start` for run_job/run_jobs that hands out this one engine."""
    return lambda job, adapters: engine
