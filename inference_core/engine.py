"""The one small interface every engine implements (vLLM, Ray, Transformers, an HTTP endpoint).

Two verbs, as lm-evaluation-harness's `LM` has `generate_until` beside `loglikelihood`:
`generate` takes token-id prompts and sampling settings and yields finished completions as they
finish, in any order; `loglikelihood` takes token-id sequences and yields the log-probability of
each token from a given position on (a prefill, no decoding). An engine never knows what a
dataset or a user is. Engines are picked by the config: `_target_` in conf/engine/<name>.yaml
names the class, and every class takes the same arguments (see `start_engine`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence


@dataclass(frozen=True)
class SamplingSettings:
    num_samples: int
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    min_tokens: int = 1
    stop: tuple[str, ...] = ()
    # 1.0 is off; above 1 discourages tokens already in the prompt or output (both engines).
    repetition_penalty: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    token_ids: Sequence[int]
    num_samples: int
    # LoRA adapter folder to apply to this request (None: the base model alone).
    adapter: str | None = None
    # This request's own seed (sample i draws from seed + i), derived from the run seed and the
    # item's location, so a resumed or sharded run draws what an uninterrupted one would.
    # None: the engine's own seed. Engines that cannot seed requests ignore it (and say so).
    seed: int | None = None
    # The chat messages the token ids were rendered from, for engines that send messages
    # (engine=openai, api=chat); None where the pipeline does not carry them.
    messages: tuple[Mapping[str, str], ...] | None = None
    # This request's own sampling settings, where jobs with different settings (datasets with
    # their own presets) share one engine call; None: the call's settings.
    sampling: SamplingSettings | None = None

    def sampling_or(self, default: SamplingSettings) -> SamplingSettings:
        return self.sampling if self.sampling is not None else default


@dataclass(frozen=True)
class Completion:
    """All samples of one request, once the last of them has finished."""

    request_id: str
    texts: tuple[str, ...]
    finish_reasons: tuple[str, ...]
    output_tokens: tuple[int, ...]
    prompt_tokens: int
    # The stop string that ended each sample; None for EOS or length (or an engine that cannot say).
    stop_reasons: tuple[str | None, ...] = ()
    # Why the request got no samples (e.g. an endpoint's 400 message); the pipeline lists the item
    # in skipped_items with it and does not ask again in this run.
    error: str | None = None


@dataclass(frozen=True)
class ScoringRequest:
    """One token sequence to score: the log-probability of every token from `target_start` on,
    each given all the tokens before it (the context is never scored)."""

    request_id: str
    token_ids: Sequence[int]
    target_start: int  # 1 <= target_start < len(token_ids)
    adapter: str | None = None
    # Also wanted: the log-probabilities of these tokens at the position after the last token
    # (the next-token distribution there: one-token answer options read in one request).
    next_token_ids: tuple[int, ...] = ()

    @property
    def target_tokens(self) -> int:
        return len(self.token_ids) - self.target_start


@dataclass(frozen=True)
class TokenScores:
    """A scored sequence: per target token its log-probability and whether it was the model's
    top choice there; log-probabilities are of the model's own distribution (log-softmax of
    the logits: no temperature, top-k or penalty)."""

    request_id: str
    logprobs: tuple[float, ...]  # one per token of token_ids[target_start:]
    greedy: tuple[bool, ...]
    next_logprobs: tuple[float, ...] = ()  # one per ScoringRequest.next_token_ids
    # Why this request could not be scored (e.g. an endpoint's 400 message); the item is listed
    # as unscored with it.
    error: str | None = None


class Engine(Protocol):
    name: str
    load_seconds: float

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """Take requests as they arrive (a lazy iterable); yield each completion as it finishes.

        `sampling` applies to every request that carries no settings of its own."""
        ...

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        """Take scoring requests as they arrive (a lazy iterable); yield each one's scores as
        they are ready, in any order. An engine that cannot score raises ConfigError at once."""
        ...

    def stats(self) -> dict[str, Any]:
        """The engine's own metrics and facts for the summary (device, parallelism, versions)."""
        ...

    def close(self) -> None:
        ...


Request = GenerationRequest | ScoringRequest
Result = Completion | TokenScores


def serve_both(engine: Engine, requests: Iterable[Request],
               sampling: SamplingSettings) -> Iterator[Result]:
    """Both verbs over one stream of requests of both kinds.

    An engine that takes both kinds in one batch has its own `serve_both` (vLLM). Any other
    scores the stream's scoring requests first (one prefill each: minutes where generation takes
    hours) and holds its generation requests, then generates them.
    """
    own = getattr(engine, "serve_both", None)
    if own is not None:
        yield from own(requests, sampling)
        return
    held: list[GenerationRequest] = []
    yield from engine.loglikelihood(OfKind(requests, ScoringRequest, held))
    yield from engine.generate(held, sampling)


class OfKind:
    """The requests of one kind from a stream, the others set aside in `held`; a stream that
    answers `take_ready` (a pipeline feed) keeps answering it."""

    def __init__(self, requests: Iterable[Request], kind: type, held: list[Any]) -> None:
        self.requests = requests
        self.kind = kind
        self.held = held
        if hasattr(requests, "take_ready"):  # only then: engines ask for it with getattr
            self.take_ready = self._take_ready

    def _sort(self, batch: Iterable[Request]) -> list[Request]:
        mine = []
        for request in batch:
            (mine if isinstance(request, self.kind) else self.held).append(request)
        return mine

    def _take_ready(self, block: bool) -> list[Request] | None:
        take = getattr(self.requests, "take_ready")
        while (batch := take(block)) is not None:
            mine = self._sort(batch)
            if mine or not block:
                return mine
        return None

    def __iter__(self) -> Iterator[Request]:
        if hasattr(self.requests, "take_ready"):
            while (batch := self._take_ready(block=True)) is not None:
                yield from batch
            return
        for request in self.requests:
            yield from self._sort([request])


def engine_class(target: str) -> type:
    """The class a `_target_` names (Hydra's own lookup)."""
    from hydra.utils import get_class

    return get_class(target)


def start_engine(engine_cfg: Mapping[str, Any], model_path: str, seed: int,
                 adapters: Sequence[Any] = ()) -> Engine:
    """The engine the config names, with the one constructor signature every engine has."""
    return engine_class(str(engine_cfg["_target_"]))(model_path, engine_cfg, seed, adapters)
