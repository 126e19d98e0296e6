"""Build every prompt up front: the format's templates, the ablation, the token budget.

What a prompt says comes from its PromptSettings (conf/prompt/<format>.yaml merged with the
dataset's parts); this module only fills the templates and fits the result into the budget.
A user's shared part (task, profile, history) is rendered and tokenized once per user; each
item adds its own part (context, cue).
"""
from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from inference_core.data.records import HistoryItem, Location, TestItem, UserRecord
from inference_core.prompts import render
from inference_core.prompts.fit import SEPARATOR_TOKENS, plan_fit, step_down
from inference_core.prompts.legacy import PromptStyle, native_settings
from inference_core.prompts.settings import PromptSettings
from inference_core.prompts.tokens import PrefixTokenizer, common_prefix_length, ids_of, safe_split

log = logging.getLogger(__name__)
PROBE = "\x00"  # stands for item-specific text when finding where a user's shared part ends
FIRST_BATCH = 8  # the newest history lines rendered and counted first

__all__ = ["Ablation", "Prompt", "PromptBuilder", "PromptStyle", "build_prompts", "render_cue"]


@dataclass(frozen=True)
class Ablation:
    name: str
    profile: bool
    history: bool
    context: bool


@dataclass(frozen=True, slots=True)  # one per item, held by the run (ids dropped once written)
class Prompt:
    """One item's final prompt, as token ids, with what the budget made us drop."""

    user_hash: str
    location: Location
    token_ids: array  # array('i'): 4 bytes a token; list() and len() work as on a tuple
    dropped_history: int
    dropped_context: int
    cut_tokens: int
    # The exact text given to the tokenizer (envelope included), only when asked for (dry run).
    text: str | None = field(default=None, repr=False, compare=False)
    # The chat messages it was rendered from, only when asked for (an endpoint's chat API).
    messages: tuple[dict[str, str], ...] | None = field(default=None, repr=False, compare=False)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def truncated(self) -> bool:
        return bool(self.dropped_history or self.dropped_context or self.cut_tokens)


def render_cue(user: UserRecord, item: TestItem) -> str:
    """The item's own question as the native format shows it (also on report cards)."""
    if item.prefix.strip():
        return item.prefix.rstrip()
    return f"{user.name}:" if user.name else ""


@dataclass
class UserParts:
    """A user's rendered shared pieces and their token counts, made once per user.

    Only the newest history lines are rendered and counted: those a prompt of the budget could
    hold, and the first that would not fit. Older ones are dropped by any fit, so their text
    and tokens are never needed, only how many there are (`history_total`).
    """

    user: UserRecord
    base: dict[str, Any]
    history: list[str]  # the newest rendered lines, oldest first
    history_tokens: list[int]  # their tokens, each line alone
    history_total: int  # every line the format shows (before fitting), rendered or not
    prefix_ids: dict[str, array] = field(default_factory=dict)
    prefixes: dict[tuple[int, str], str] = field(default_factory=dict)

    def newest(self, keep: int) -> list[str]:
        return self.history[len(self.history) - keep:] if keep else []


class PromptBuilder:
    """Turns (user, item) into token ids that fit `budget` = max_model_len - max_tokens."""

    def __init__(self, tokenizer: Any, settings: PromptSettings | PromptStyle, ablation: Ablation,
                 budget: int, chat_template_kwargs: dict[str, Any] | None = None,
                 keep_text: bool = False, keep_messages: bool = False) -> None:
        if budget <= 0:
            raise ValueError(f"no room for a prompt: token budget is {budget}")
        if isinstance(settings, PromptStyle):  # the original constructor: the native format
            settings = native_settings(settings, chat_template_kwargs)
        self.tokenizer = tokenizer
        self.settings = settings
        self.ablation = ablation
        self.budget = budget
        self.keep_text = keep_text
        self.keep_messages = keep_messages
        self.envelope = (render.envelope_family(tokenizer) if settings.envelope == "auto"
                         else settings.envelope)
        where = f"prompt={settings.name}"
        self.system = render.compile_template(settings.system, f"{where} system template")
        self.user_template = (render.compile_template(settings.user, f"{where} user template")
                              if settings.user else None)
        self.history_item = render.compile_template(settings.history_item, f"{where} history_item")
        self.context_line = render.compile_template(settings.context_line, f"{where} context_line")
        self.tokens = PrefixTokenizer(tokenizer)
        self.order = [s for s in settings.truncate if s != "cut_turn"]
        self.can_cut = "cut_turn" in settings.truncate

    # -- text -------------------------------------------------------------------------------
    def user_parts(self, user: UserRecord, with_history: bool = True) -> UserParts:
        a, s = self.ablation, self.settings
        base = {
            "user_hash": user.user_hash, "name": user.name, "profile": user.profile,
            "description": user.description, "parts": s.parts,
            "ablation": {"profile": a.profile, "history": a.history, "context": a.context},
            "profile_lines": render.profile_lines(user) if a.profile else [],
            "profile_tags": render.profile_tags(user) if a.profile else [],
        }
        items = self.history_items(user) if a.history and with_history else []
        history, tokens = self.newest_lines(user, items)
        return UserParts(user, base, history, tokens, len(items))

    def history_items(self, user: UserRecord) -> list[HistoryItem]:
        """What the format shows of the user's history, oldest first (before fitting)."""
        items: Iterable[HistoryItem] = user.history
        if self.settings.history_order == "file":
            items = sorted(items, key=lambda h: h.order)
        items = list(items)
        if self.settings.history_limit is not None:
            items = items[:self.settings.history_limit]
        return items

    def render_history(self, user: UserRecord) -> list[str]:
        return [self.render_item(h, user) for h in self.history_items(user)]

    def render_item(self, h: HistoryItem, user: UserRecord) -> str:
        return self.history_item.render(item=self.history_data(h, user), parts=self.settings.parts)

    def newest_lines(self, user: UserRecord, items: list[HistoryItem],
                     ) -> tuple[list[str], list[int]]:
        """The newest lines rendered and counted, oldest first, until they alone are over the
        budget (no fit keeps a line older than the first that does not fit): in batches, one
        tokenizer call each, each next one as many lines as the room left needs at the lines'
        average cost so far, and one more."""
        lines: list[str] = []
        tokens: list[int] = []
        end, batch, cost = len(items), FIRST_BATCH, 0
        while end > 0 and cost <= self.budget:
            start = max(0, end - batch)
            rendered = [self.render_item(h, user) for h in items[start:end]]
            counts = [len(i) for i in ids_of(self.tokenizer, rendered)]
            lines[:0], tokens[:0] = rendered, counts
            cost += sum(counts) + SEPARATOR_TOKENS * len(counts)
            end, batch = start, (self.budget - cost) * len(lines) // cost + 2
        return lines, tokens

    def history_data(self, h: HistoryItem, user: UserRecord) -> dict[str, Any]:
        turns = render.turn_data(h.context, user, self.settings.drop_blank_turns)
        return {"text": h.text, "prefix": h.prefix, "timestamp": h.timestamp, "context": turns}

    def context_lines(self, user: UserRecord, item: TestItem) -> list[str]:
        if not self.ablation.context:
            return []
        turns = render.turn_data(item.context, user, self.settings.drop_blank_turns)
        return [self.context_line.render(turn=t, parts=self.settings.parts) for t in turns]

    def messages(self, up: UserParts, item: TestItem, history: list[str], context: list[str],
                 dropped_history: int = 0, dropped_context: int = 0, prefix: str | None = None,
                 ) -> list[dict[str, str]]:
        """The chat messages of one prompt: the system message, and the user turn where the
        format has one (the tagged formats put everything in the system message)."""
        values = {**up.base, "history": history, "history_total": up.history_total,
                  "dropped_history": dropped_history, "context": context,
                  "dropped_context": dropped_context, "collection_desc": item.collection_desc,
                  "prefix": item.prefix if prefix is None else prefix}
        messages = [{"role": "system", "content": self.system.render(values)}]
        if self.user_template is not None and self.envelope == "chat":
            messages.append({"role": "user", "content": self.user_template.render(values)})
        return messages

    def text(self, up: UserParts, item: TestItem, history: list[str], context: list[str],
             dropped_history: int = 0, dropped_context: int = 0, prefix: str | None = None) -> str:
        """The exact text the tokenizer gets: templates filled, envelope and answer opener on."""
        messages = self.messages(up, item, history, context, dropped_history, dropped_context,
                                 prefix)
        if self.envelope == "chat":
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True,
                **dict(self.settings.chat_template_kwargs))
        elif self.envelope == "chatml":
            text = render.chatml_envelope(self.tokenizer, messages[0]["content"],
                                          dict(self.settings.chat_template_kwargs))
        else:
            text = render.gemma_envelope(messages[0]["content"])
        return text + (self.settings.answer.open if self.settings.answer else "")

    def shared_prefix(self, up: UserParts, item: TestItem, keep_h: int, text: str) -> str:
        """Where this text's user-level part ends (probe item differs in everything item-own),
        at a point where this very text may be tokenized in two parts."""
        key = (keep_h, item.collection_desc)
        pre = self.tokens.pre_tokenizer
        if key not in up.prefixes:
            probe = self.text(up, item, up.newest(keep_h), [PROBE] if self.ablation.context else [],
                              up.history_total - keep_h, 0, prefix=PROBE)
            up.prefixes[key] = text[:common_prefix_length(text, probe)]
        limit = common_prefix_length(text, up.prefixes[key])
        return text[:safe_split(text, limit, pre)]

    def encode(self, up: UserParts, item: TestItem, keep_h: int, context: list[str],
               dropped_context: int) -> tuple[array, str]:
        text = self.text(up, item, up.newest(keep_h), context, up.history_total - keep_h,
                         dropped_context)
        prefix = self.shared_prefix(up, item, keep_h, text)
        return self.tokens.encode(text, prefix, up.prefix_ids), text

    # -- budget -----------------------------------------------------------------------------
    def estimate_user(self, user: UserRecord, chars_per_token: float) -> int:
        """A user's prompt tokens, guessed cheaply: one item tokenized without history or
        context, the history and context counted in characters, each prompt capped at the budget.

        Shards split users by it before building anything, so each builds its own users only.
        """
        if not user.items:
            return 0
        up = self.user_parts(user, with_history=False)
        fixed = len(self.encode(up, user.items[0], 0, [], 0)[0])
        history = sum(map(len, self.render_history(user))) if self.ablation.history else 0
        total = 0
        for item in user.items:
            context = sum(map(len, self.context_lines(user, item)))
            total += min(self.budget, fixed + int((history + context) / chars_per_token))
        return total

    def build_user(self, user: UserRecord) -> Iterator[Prompt | tuple[Location, str]]:
        """Every item of one user: a Prompt, or (location, reason) when none can fit."""
        up = self.user_parts(user)
        contexts = [self.context_lines(user, item) for item in user.items]
        counts = iter(len(i) for i in ids_of(self.tokenizer, [c for cs in contexts for c in cs]))
        for item, context in zip(user.items, contexts):
            yield self.fit(up, item, context, [next(counts) for _ in context])

    def fit_item(self, user: UserRecord, item: TestItem, budget: int,
                 ) -> Prompt | tuple[Location, str]:
        """One item fitted to a smaller budget than the builder's (a scored target longer than
        max_tokens): cut as every prompt is cut."""
        if budget <= 0:
            return item.location, f"no room for the prompt: a budget of {budget} tokens"
        kept, self.budget = self.budget, budget
        try:
            context = self.context_lines(user, item)
            counts = [len(i) for i in ids_of(self.tokenizer, context)]
            return self.fit(self.user_parts(user), item, context, counts)
        finally:
            self.budget = kept

    def fit(self, up: UserParts, item: TestItem, context: list[str], context_tokens: list[int],
            ) -> Prompt | tuple[Location, str]:
        """Cut what the format's `truncate` names, oldest first, until the prompt fits."""
        # Counted whole: the text without history or context is short, and its user-level part
        # is rarely a final prompt's (splitting it off would cost a second render).
        fixed = len(self.tokens.whole(self.text(up, item, [], [], up.history_total, 0)))
        if fixed > self.budget:
            return item.location, f"prompt without history or context is {fixed} tokens, over the budget of {self.budget}"
        sizes = {"history": up.history_tokens, "context": context_tokens}
        first, second = (sizes[s] for s in self.order)
        keep = list(plan_fit(self.budget - fixed, first, second, self.can_cut))
        while True:
            keep_h, keep_c, cut = (keep[0], keep[1], keep[2]) if self.order[0] == "history" else (
                keep[1], keep[0], keep[2])
            ctx = context[len(context) - keep_c:] if keep_c else []
            if cut and ctx:
                ctx = ctx[:-1] + [self.keep_tail(ctx[-1], cut)]
            ids, text = self.encode(up, item, keep_h, ctx, len(context) - keep_c)
            if len(ids) <= self.budget:
                messages = None
                if self.keep_messages:
                    messages = tuple(self.messages(up, item, up.newest(keep_h), ctx,
                                                   up.history_total - keep_h, len(context) - keep_c))
                return Prompt(up.user.user_hash, item.location, ids, up.history_total - keep_h,
                              len(context) - keep_c, cut, text if self.keep_text else None,
                              messages)
            # Pieces tokenized alone differ by a token or two from the joined text: step further.
            newest = sizes[self.order[1]][-1] if sizes[self.order[1]] else 0
            if not step_down(keep, len(ids) - self.budget, self.can_cut, newest):
                return item.location, "prompt does not fit the budget"

    def keep_tail(self, text: str, cut_tokens: int) -> str:
        """The most recent part of a turn: its last tokens, minus `cut_tokens` from the front."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids[min(cut_tokens, len(ids)):])


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
