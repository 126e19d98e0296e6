"""The run's own prompts as the report page shows them, decoded from the token ids it built.

A run hands its users' prompts over as they finish (the user-file writer thread decodes them,
beside generation), and only until the page's prompt budget is spent: a 100k-item run holds at
most a page's worth of prompt text, never every prompt's token ids until the end.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inference_core.prompts.tokens import common_prefix_length

# The prompt text one report page embeds (python -m inference_core.report --prompt-budget-mb).
PAGE_PROMPT_CHARS = 64_000_000
Key = tuple[str, str]  # (user_hash, "record/collection/item")
UserPrompts = Sequence[tuple[Key, Sequence[int]]]  # one user's prompts: key and token ids


@dataclass(frozen=True)
class RebuiltPrompt:
    text: str
    num_tokens: int


def shared_prefix(texts: Sequence[str]) -> str:
    """The longest common prefix, by prompts.tokens' C-speed halving (os.path.commonprefix
    walks it one character at a time in Python): the prefix all share is the one the least
    and the greatest text share."""
    if not texts:
        return ""
    first, last = min(texts), max(texts)
    return first[:common_prefix_length(first, last)]


@dataclass
class PromptTexts:
    """Prompts decoded user by user, counted as the page packs them (a user's shared prefix
    once), until `budget_chars` is spent; later users' prompts are only counted."""

    tokenizer: Any
    budget_chars: int
    # Decode with a private copy of the fast backend (made on first use): for a thread other
    # than the one building prompts, so two threads never borrow one Rust tokenizer at once.
    own_copy: bool = False
    texts: dict[Key, RebuiltPrompt] = field(default_factory=dict)
    left_out: int = 0
    _backend: Any = field(default=None, repr=False)

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Token ids as text, exactly as tokenizer.decode writes them (no clean-up, specials
        kept); a fast tokenizer decodes the whole batch in its Rust backend."""
        lists = [list(i) for i in ids]
        if self._backend is None:
            self._backend = getattr(self.tokenizer, "backend_tokenizer", None)
            if self._backend is not None and self.own_copy:
                from tokenizers import Tokenizer

                self._backend = Tokenizer.from_str(self._backend.to_str())
        if self._backend is not None:
            return self._backend.decode_batch(lists, skip_special_tokens=False)
        return [self.tokenizer.decode(i, skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False) for i in lists]

    def add_users(self, users: Sequence[UserPrompts]) -> None:
        """Decode these users' prompts (one batch call), as far as the budget goes."""
        users = [u for u in users if u]
        if self.left_out or not users:
            self.left_out += sum(map(len, users))
            return
        texts = iter(self.decode([ids for user in users for _, ids in user]))
        for n, user in enumerate(users):
            mine = [next(texts) for _ in user]
            shared = shared_prefix(mine)
            self.budget_chars -= len(shared) + sum(len(t) - len(shared) for t in mine)
            if self.budget_chars < 0:
                self.left_out += sum(map(len, users[n:]))
                return
            self.texts.update({key: RebuiltPrompt(t, len(ids)) for (key, ids), t in zip(user, mine)})

    @property
    def notes(self) -> list[str]:
        if not self.left_out:
            return []
        return [f"{self.left_out} prompts were not decoded: the page's prompt budget is spent"]
