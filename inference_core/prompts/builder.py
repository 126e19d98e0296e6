"""Build every prompt up front: ablation parts, chat template, token budget, stable order.

Layout: the system message holds what is the same for all of a user's items (task, instruction,
profile, history) and the user message holds the item's own part (context, cue), so the prompts
of one user share a long prefix that vLLM's prefix cache computes once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from inference_core.data.records import HistoryItem, Location, TestItem, Turn, UserRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ablation:
    name: str
    profile: bool
    history: bool
    context: bool


@dataclass(frozen=True)
class PromptStyle:
    """Dataset-specific wording (from conf/dataset/*.yaml)."""

    instruction: str
    history_header: str
    history_context_turns: int


@dataclass(frozen=True)
class Prompt:
    """One item's final prompt, as token ids, with what the budget made us drop."""

    user_hash: str
    location: Location
    token_ids: tuple[int, ...]
    dropped_history: int
    dropped_context: int
    cut_tokens: int

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_history or self.dropped_context or self.cut_tokens)


def render_turns(turns: Iterable[Turn]) -> list[str]:
    return [f"{t.source}: {t.content}" if t.source else t.content for t in turns]


def render_history_item(item: HistoryItem, context_turns: int) -> str:
    lines = render_turns(item.context[-context_turns:]) if context_turns > 0 else []
    return "\n".join(lines + [f"{item.prefix}{item.text}"])


def flatten(value: Any, prefix: str = "") -> list[str]:
    """Nested profile/personality fields as 'key: value' lines, in their input order."""
    if isinstance(value, dict):
        lines: list[str] = []
        for key, sub in value.items():
            lines += flatten(sub, f"{prefix}{key}" if not prefix else f"{prefix} / {key}")
        return lines
    if value in (None, "", [], {}):
        return []
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return [f"{prefix}: {value}" if prefix else str(value)]


def render_profile(user: UserRecord) -> str:
    lines = flatten(user.profile) + flatten(user.personality)
    return "About this person:\n" + "\n".join(lines) if lines else ""


def render_cue(user: UserRecord, item: TestItem) -> str:
    """The item's own question: always present, whatever the ablation."""
    if item.prefix.strip():
        return item.prefix.rstrip()
    return f"{user.name}:" if user.name else ""


class PromptBuilder:
    """Turns (user, item) into token ids that fit `budget` = max_model_len - max_tokens."""

    def __init__(self, tokenizer: Any, style: PromptStyle, ablation: Ablation, budget: int,
                 chat_template_kwargs: dict[str, Any] | None = None) -> None:
        if budget <= 0:
            raise ValueError(f"no room for a prompt: token budget is {budget}")
        self.tokenizer = tokenizer
        self.style = style
        self.ablation = ablation
        self.budget = budget
        self.template_kwargs = dict(chat_template_kwargs or {})

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def estimate_user(self, user: UserRecord, chars_per_token: float) -> int:
        """A user's prompt tokens, guessed cheaply: one item tokenized without history or
        context, the history and context counted in characters, each prompt capped at the budget.

        Shards split users by it before building anything, so each builds its own users only.
        """
        if not user.items:
            return 0
        fixed = len(self.encode(user, user.items[0], [], []))
        history = sum(len(render_history_item(h, self.style.history_context_turns))
                      for h in user.history) if self.ablation.history else 0
        total = 0
        for item in user.items:
            context = sum(map(len, render_turns(item.context))) if self.ablation.context else 0
            total += min(self.budget, fixed + int((history + context) / chars_per_token))
        return total

    def encode(self, user: UserRecord, item: TestItem, history: list[str], context: list[str],
               ) -> list[int]:
        system = "\n\n".join(p for p in [
            user.description, item.collection_desc, self.style.instruction,
            render_profile(user) if self.ablation.profile else "",
            f"{self.style.history_header}:\n" + "\n\n".join(history) if history else "",
        ] if p)
        parts = []
        if context:
            parts.append("Conversation so far:\n" + "\n".join(context))
        parts.append(render_cue(user, item))
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": "\n\n".join(p for p in parts if p)}]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **self.template_kwargs)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def build_user(self, user: UserRecord) -> Iterator[Prompt | tuple[Location, str]]:
        """Every item of one user: a Prompt, or (location, reason) when none can fit."""
        history = [render_history_item(h, self.style.history_context_turns)
                   for h in user.history] if self.ablation.history else []
        history_tokens = self.count(history)
        for item in user.items:
            context = render_turns(item.context) if self.ablation.context else []
            yield self.fit(user, item, history, history_tokens, context)

    def fit(self, user: UserRecord, item: TestItem, history: list[str], history_tokens: list[int],
            context: list[str]) -> Prompt | tuple[Location, str]:
        """Drop oldest history, then oldest context turns, then cut the last turn's oldest text."""
        fixed = len(self.encode(user, item, [], []))
        if fixed > self.budget:
            return item.location, f"prompt without history or context is {fixed} tokens, over the budget of {self.budget}"
        keep_h, keep_c, cut = plan_fit(self.budget - fixed, history_tokens, self.count(context))
        while True:
            ctx = context[len(context) - keep_c:] if keep_c else []
            if cut and ctx:
                ctx = ctx[:-1] + [self.keep_tail(ctx[-1], cut)]
            ids = self.encode(user, item, history[len(history) - keep_h:] if keep_h else [], ctx)
            if len(ids) <= self.budget:
                return Prompt(user.user_hash, item.location, tuple(ids), len(history) - keep_h,
                              len(context) - keep_c, cut)
            # Pieces tokenized alone differ by a token or two from the joined text: step further.
            if keep_h:
                keep_h -= 1
            elif keep_c > 1:
                keep_c -= 1
            elif keep_c == 1:
                cut += len(ids) - self.budget
            else:
                return item.location, "prompt does not fit the budget"

    def keep_tail(self, text: str, cut_tokens: int) -> str:
        """The most recent part of a turn: its last tokens, minus `cut_tokens` from the front."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids[min(cut_tokens, len(ids)):])


def plan_fit(room: int, history_tokens: list[int], context_tokens: list[int]) -> tuple[int, int, int]:
    """How many newest history items and context turns fit in `room`, and how much to cut.

    Each piece costs its tokens plus a separator or two.
    """
    sep = 2
    ctx_cost = sum(context_tokens) + sep * len(context_tokens)
    if ctx_cost <= room:
        keep_h, used = 0, ctx_cost
        for tokens in reversed(history_tokens):
            if used + tokens + sep > room:
                break
            keep_h, used = keep_h + 1, used + tokens + sep
        return keep_h, len(context_tokens), 0
    keep_c, used = 0, 0
    for tokens in reversed(context_tokens):
        if used + tokens + sep > room:
            break
        keep_c, used = keep_c + 1, used + tokens + sep
    if keep_c:
        return 0, keep_c, 0
    # Not even the last turn fits whole: keep it, cut to its most recent text.
    return 0, 1, max(0, context_tokens[-1] + sep - room)


def build_prompts(builder: PromptBuilder, users: Iterable[UserRecord],
                  ) -> tuple[list[Prompt], list[tuple[str, Location, str]]]:
    """All prompts in user order (a user's items adjacent), and the items that could not fit."""
    prompts: list[Prompt] = []
    unfit: list[tuple[str, Location, str]] = []
    for user in users:
        for built in builder.build_user(user):
            if isinstance(built, Prompt):
                prompts.append(built)
            else:
                unfit.append((user.user_hash, *built))
    return prompts, unfit
