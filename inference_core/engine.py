"""The one small interface every engine implements (vLLM, Ray, Transformers, an HTTP endpoint).

An engine takes token-id prompts and sampling settings and yields finished completions as they
finish, in any order. It never knows what a dataset or a user is. Engines are picked by the
config: `_target_` in conf/engine/<name>.yaml names the class, and every class takes the same
arguments (see `start_engine`).
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


class Engine(Protocol):
    name: str
    load_seconds: float

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """Take requests as they arrive (a lazy iterable); yield each completion as it finishes.

        `sampling` applies to every request that carries no settings of its own."""
        ...

    def stats(self) -> dict[str, Any]:
        """The engine's own metrics and facts for the summary (device, parallelism, versions)."""
        ...

    def close(self) -> None:
        ...


def engine_class(target: str) -> type:
    """The class a `_target_` names (Hydra's own lookup)."""
    from hydra.utils import get_class

    return get_class(target)


def start_engine(engine_cfg: Mapping[str, Any], model_path: str, seed: int,
                 adapters: Sequence[Any] = ()) -> Engine:
    """The engine the config names, with the one constructor signature every engine has."""
    return engine_class(str(engine_cfg["_target_"]))(model_path, engine_cfg, seed, adapters)
