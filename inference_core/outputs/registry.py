"""Output handlers: what a dataset makes of a generated text before it counts as a sample.

A dataset names its handlers (`dataset.output_handler: rating`); `make_output_handler` chains
them into one OutputHandler. A handler returns the cleaned text (the raw text kept beside it),
or None when the text is unusable: the pipeline then draws that sample again within
`sampling.blank_retries`, and counts and shows what is still unusable after that. No handler
ever invents a placeholder.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from inference_core.data.records import TestItem
from inference_core.errors import ConfigError
# The built-in handlers, imported for their @register side effect.
from inference_core.outputs import answer_block, choice, rating, script  # noqa: F401
# Re-exported: callers name the handler types and `register` from here or from the package.
from inference_core.outputs.stage import (HANDLERS, HandledSample, OutputHandler,  # noqa: F401
                                          register)


def handler_names() -> list[str]:
    return sorted(HANDLERS)


def as_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`dataset.output_handler` as a tuple: null, one name, or a list applied in order."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    return tuple(str(v) for v in value)


def make_output_handler(names: Sequence[str], options: Mapping[str, Any]) -> OutputHandler:
    """One handler that applies `names` in order; a blank result at any point is unusable."""
    unknown = [n for n in names if n not in HANDLERS]
    if unknown:
        raise ConfigError(f"dataset.output_handler={unknown[0]!r} is not a known output handler: "
                          f"choose from {', '.join(sorted(HANDLERS))} (or null)")
    stages = [HANDLERS[n](options) for n in names]

    def handle(raw_text: str, item: TestItem, stop_reason: str | None) -> HandledSample | None:
        sample: HandledSample | None = HandledSample(raw_text, raw_text)
        for stage in stages:
            if sample is None or not sample.text.strip():
                return None
            sample = stage(sample, item, stop_reason)
        return sample if sample is not None and sample.text.strip() else None

    return handle

