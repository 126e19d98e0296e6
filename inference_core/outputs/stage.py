"""What every output handler is made of: the sample it passes on, the stage type and the
registry table it adds itself to (below the handlers; registry.py, above them, chains them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

from inference_core.data.records import TestItem


@dataclass(frozen=True)
class HandledSample:
    """One usable sample: the text that is scored and written, the raw generation, and notes
    (e.g. "rating_snapped") on what the handlers did to it."""

    text: str
    raw: str
    flags: frozenset[str] = frozenset()


class OutputHandler(Protocol):
    def __call__(self, raw_text: str, item: TestItem,
                 stop_reason: str | None) -> HandledSample | None: ...


# One link of the chain: sees the sample as the previous link left it.
Stage = Callable[[HandledSample, TestItem, "str | None"], "HandledSample | None"]
# Builds a stage from `dataset.output_handler_options`; raises ConfigError on bad options.
StageFactory = Callable[[Mapping[str, Any]], Stage]

HANDLERS: dict[str, StageFactory] = {}


def register(name: str) -> Callable[[StageFactory], StageFactory]:
    """Make a handler choosable by name in a dataset YAML."""
    def add(factory: StageFactory) -> StageFactory:
        HANDLERS[name] = factory
        return factory
    return add


def flagged(sample: HandledSample, text: str, *flags: str) -> HandledSample:
    """The sample with new text and extra flags (the raw generation stays as it was)."""
    return HandledSample(text, sample.raw, sample.flags | frozenset(flags))
