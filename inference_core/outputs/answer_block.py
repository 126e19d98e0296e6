"""answer_block: the text inside the prompt format's answer wrapper ([ANSWER]...[/ANSWER]).

The parsing itself is `inference_core.prompts.answers.extract_answer` (the prompt formats own
their wrapper); this handler only asks it and notes an answer the model never closed.
"""
from __future__ import annotations

from typing import Any, Mapping

from inference_core.data.records import TestItem
from inference_core.errors import ConfigError
from inference_core.outputs.stage import HandledSample, Stage, flagged, register


@register("answer_block")
def answer_block(options: Mapping[str, Any]) -> Stage:
    try:
        from inference_core.prompts.answers import extract_answer
    except ImportError:
        raise ConfigError("dataset.output_handler=answer_block needs "
                          "inference_core.prompts.answers (the tagged prompt formats), which this "
                          "install lacks: choose another handler or prompt format") from None
    wrapper = options.get("answer_wrapper")

    def stage(sample: HandledSample, item: TestItem, stop_reason: str | None,
              ) -> HandledSample | None:
        # The formats stop on the wrapper's closing tag, which the engines leave out of the text.
        closed_by_stop = stop_reason is not None and (wrapper is None or stop_reason == wrapper.close)
        answer = extract_answer(sample.text, closed_by_stop, wrapper)
        if not answer.text.strip():
            return None
        # Kept as generated, but counted: the summary's answer_format_misses.
        flags = () if answer.closed else ("answer_format_miss",)
        return flagged(sample, answer.text.strip(), *flags)

    return stage
