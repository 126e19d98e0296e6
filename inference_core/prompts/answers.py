"""The answer inside a format's wrapper ([ANSWER] ... [/ANSWER]).

The prompt already ends with the opener, so a sample starts inside the wrapper; a closed sample
is one the closing tag (as a stop string or in the text) ended.
"""
from __future__ import annotations

from dataclasses import dataclass

from inference_core.prompts.settings import AnswerWrapper


@dataclass(frozen=True)
class AnswerText:
    text: str
    closed: bool


def extract_answer(text: str, closed_by_stop: bool, wrapper: AnswerWrapper | None) -> AnswerText:
    """The answer of one sample: a repeated leading opener stripped, cut at a closing tag,
    the newline before the close dropped. Without a wrapper the text is the answer."""
    if wrapper is None:
        return AnswerText(text, closed_by_stop)
    opener = wrapper.open.strip()
    body = text
    while body.lstrip().startswith(opener):  # the model wrote the opener again (nested tag)
        body = body.lstrip()[len(opener):].lstrip("\n")
    end = body.find(wrapper.close)
    found = end != -1
    if found:
        body = body[:end]
    if found or closed_by_stop:
        body = body[:-1] if body.endswith("\n") else body
    return AnswerText(body, closed_by_stop or found)
