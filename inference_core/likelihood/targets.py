"""What an item's likelihood is taken of: the prompt as training saw it, then the trained target.

Training masked the prompt and learned the target that followed it (reference/TRAINING_FORMATS.md
section 2, "Loss mask"): for the tagged formats `[ANSWER]\\n{gold}\\n[/ANSWER]` and the envelope's
closing token (`<|im_end|>` for ChatML, `<end_of_turn>` for Gemma); for the native format the
reference and the chat template's end of turn. The generation prompt of a tagged format already
ends with the answer opener; the scored text is still the whole trained target after the prompt
training saw. Prompt and target are tokenized as one string and the tokens after the prompt's own
token count are scored, as the loss mask did; where the tokenizer merges tokens across that
boundary the item says so (`merged_boundary`) rather than shift it.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Sequence

from inference_core.prompts.settings import PromptSettings

CLOSING_TOKENS = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>"}
SENTINEL = "\x00"  # stands for an answer when reading the chat template's end of turn


@dataclass(frozen=True)
class Target:
    """The text that follows the prompt, and where the answer itself lies in it (characters)."""

    text: str
    body_start: int
    body_end: int
    option: str | None = None  # the answer option it states, for an answer set


@dataclass(frozen=True)
class ScoredSequence:
    """One target after its prompt as token ids: the tokens from `target_start` on are scored."""

    token_ids: array
    target_start: int
    body: tuple[int, int]  # the answer's tokens: [start, end) counted from target_start
    target_bytes: int
    body_bytes: int
    merged_boundary: bool
    option: str | None = None
    head_bytes: int = 0  # the target's bytes before the answer (the opener)
    # A one-token answer set read at one slot: this sequence ends there and asks for these
    # options' tokens next; its first `ignored` scored tokens are context, not target.
    slot_options: tuple[str, ...] = ()
    slot_tokens: tuple[int, ...] = ()
    ignored: int = 0

    @property
    def target_tokens(self) -> int:
        return len(self.token_ids) - self.target_start


def chat_end_of_turn(tokenizer: Any, kwargs: dict[str, Any]) -> str:
    """What the chat template writes after an assistant message (its end-of-turn token)."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    after = text[text.rindex(SENTINEL) + 1:]
    return after.rstrip() or (getattr(tokenizer, "eos_token", None) or "")


class TargetBuilder:
    """A job's scored texts: its format's answer wrapper and closing token, its tokenizer."""

    def __init__(self, tokenizer: Any, settings: PromptSettings, envelope: str) -> None:
        self.tokenizer = tokenizer
        self.answer = settings.answer
        self.closing = (CLOSING_TOKENS[envelope] if envelope in CLOSING_TOKENS else
                        chat_end_of_turn(tokenizer, dict(settings.chat_template_kwargs)))

    def training_prompt(self, generation_text: str) -> str:
        """The prompt as training saw it: the generation prompt without its answer opener."""
        opener = self.answer.open if self.answer else ""
        if opener and generation_text.endswith(opener):
            return generation_text[:-len(opener)]
        return generation_text

    def target(self, answer: str, option: str | None = None) -> Target:
        """The trained target around an answer (training took `continuation.strip()`)."""
        gold = answer.strip()
        if self.answer is None:
            return Target(gold + self.closing, 0, len(gold), option)
        head = self.answer.open
        return Target(f"{head}{gold}\n{self.answer.close}{self.closing}", len(head),
                      len(head) + len(gold), option)

    def sequences(self, prompt_text: str, targets: Sequence[Target]) -> list[ScoredSequence]:
        """Each target after the prompt, tokenized with it as one string. The prompt is
        tokenized once; where the first target's tokens start exactly at the prompt's end, the
        others' are the prompt's ids followed by their own (the same ids, one long call less)."""
        prompt_ids = self._ids(prompt_text)
        out: list[ScoredSequence] = []
        clean = False
        for k, target in enumerate(targets):
            tail = self._encode(target.text)
            if k and clean:
                ids = prompt_ids + array("i", tail["input_ids"])
                out.append(self._sequence(ids, len(prompt_ids), tail["offset_mapping"], target,
                                          False))
                continue
            whole = self._encode(prompt_text + target.text)
            ids = array("i", whole["input_ids"])
            n = len(prompt_ids)
            merged = ids[:n] != prompt_ids
            clean = not merged and ids[n:] == array("i", tail["input_ids"])
            offsets = [(a - len(prompt_text), b - len(prompt_text))
                       for a, b in whole["offset_mapping"][n:]]
            out.append(self._sequence(ids, n, offsets, target, merged))
        return out

    def _ids(self, text: str) -> array:
        return array("i", self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, text: str) -> Any:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

    @staticmethod
    def _sequence(ids: array, start: int, offsets: Sequence[tuple[int, int]], target: Target,
                  merged: bool) -> ScoredSequence:
        """The answer's tokens are the target tokens whose characters overlap it."""
        inside = [i for i, (a, b) in enumerate(offsets)
                  if a < target.body_end and b > target.body_start]
        body = (inside[0], inside[-1] + 1) if inside else (0, 0)
        body_text = target.text[target.body_start:target.body_end]
        return ScoredSequence(ids, start, body, len(target.text.encode("utf-8")),
                              len(body_text.encode("utf-8")), merged, target.option,
                              len(target.text[:target.body_start].encode("utf-8")))


def answer_slot(sequences: Sequence[ScoredSequence]) -> ScoredSequence | None:
    """Where every option is one token, distinct, at the same slot after the same tokens: one
    sequence up to that slot that asks for the options' tokens next (one prefill per item
    instead of one per option: measured in docs/benchmarks.md); None otherwise."""
    options = [s for s in sequences if s.option is not None]
    if len(options) < 2 or any(s.body[1] - s.body[0] != 1 for s in options):
        return None
    first = options[0]
    slot = first.target_start + first.body[0]
    ids = first.token_ids[:slot]
    tokens = tuple(s.token_ids[slot] for s in options)
    if (len(set(tokens)) < len(tokens) or any(s.target_start + s.body[0] != slot
                                              or s.token_ids[:slot] != ids for s in options)):
        return None
    # Nothing of the target before the slot (no opener): the last context token stands in.
    start = first.target_start if slot > first.target_start else slot - 1
    return ScoredSequence(ids, start, (0, 0), first.head_bytes, 0,
                          any(s.merged_boundary for s in options), None, first.head_bytes,
                          tuple(s.option for s in options if s.option is not None), tokens,
                          first.target_start - start)
