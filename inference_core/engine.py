"""The one small interface every engine implements (vLLM, Transformers).

An engine takes token-id prompts and sampling settings and yields finished completions as they
finish, in any order. It never knows what a dataset or a user is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, Sequence


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

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    token_ids: tuple[int, ...]
    num_samples: int
    # LoRA adapter folder to apply to this request (None: the base model alone).
    adapter: str | None = None
    # The chat messages the token ids were rendered from, for engines that send messages
    # (engine=openai, api=chat); None where the pipeline does not carry them.
    messages: tuple[Mapping[str, str], ...] | None = None


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


class Engine(Protocol):
    name: str
    load_seconds: float

    def generate(self, requests: Sequence[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """Submit every request at once; yield each completion as it finishes."""
        ...

    def stats(self) -> dict[str, Any]:
        """The engine's own metrics and facts for the summary (device, parallelism, versions)."""
        ...

    def close(self) -> None:
        ...


class BorrowedEngine:
    """An engine lent to a job that must not close it (one engine serving several jobs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name
        self.load_seconds = engine.load_seconds

    def generate(self, requests: Sequence[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        return self.engine.generate(requests, sampling)

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def close(self) -> None:  # the lender closes it
        pass
