"""The run's own prompts as the report page shows them, decoded from the token ids it built.

A run hands its users' prompts over as they finish (the user-file writer thread decodes them,
beside generation), and only until the page's prompt budget is spent: a 100k-item run holds at
most a page's worth of prompt text, never every prompt's token ids until the end. The texts are
kept packed as the page stores them (a user's shared prefix once, then each prompt's rest), so
the page indexes them instead of copying them a second time.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


@dataclass(frozen=True)
class PackedUser:
    """One user's prompts: the prefix they all share, and per location key the rest of the
    prompt after it and the prompt's token count."""

    prefix: str
    rests: Mapping[str, tuple[str, int]]

    @property
    def cost(self) -> int:
        return len(self.prefix) + sum(len(rest) for rest, _ in self.rests.values())


def shared_prefix(texts: Sequence[str]) -> str:
    """The longest common prefix, by prompts.tokens' C-speed halving (os.path.commonprefix
    walks it one character at a time in Python): the prefix all share is the one the least
    and the greatest text share."""
    if not texts:
        return ""
    first, last = min(texts), max(texts)
    return first[:common_prefix_length(first, last)]


def pack_user(prompts: Iterable[tuple[str, str, int]]) -> PackedUser:
    """(location key, text, token count) of one user's prompts, packed."""
    prompts = list(prompts)
    prefix = shared_prefix([text for _, text, _ in prompts])
    return PackedUser(prefix, {loc: (text[len(prefix):], n) for loc, text, n in prompts})


class PromptStore:
    """Prompt texts by user, packed; once `budget_chars` (default: no limit) is spent, later
    users' prompts are only counted (`left_out`)."""

    def __init__(self, budget_chars: float = math.inf) -> None:
        self.users: dict[str, PackedUser] = {}
        self.budget_chars = budget_chars
        self.left_out = 0

    def add_user(self, user_hash: str, prompts: Sequence[tuple[str, str, int]]) -> bool:
        """Store one user's (location key, text, token count); a user handed over again is
        packed anew with both parts. False, and counted as left out, once over the budget."""
        if self.left_out:
            self.left_out += len(prompts)
            return False
        earlier = self.users.pop(user_hash, None)
        if earlier is not None:
            self.budget_chars += earlier.cost
            prompts = [*((loc, earlier.prefix + rest, n)
                         for loc, (rest, n) in earlier.rests.items()), *prompts]
        packed = pack_user(prompts)
        if packed.cost > self.budget_chars:
            self.left_out += len(prompts)
            return False
        self.budget_chars -= packed.cost
        self.users[user_hash] = packed
        return True

    def get(self, key: Key) -> RebuiltPrompt | None:
        """One prompt's whole text (made on request: the store holds it packed)."""
        user = self.users.get(key[0])
        rest = user.rests.get(key[1]) if user is not None else None
        return None if rest is None else RebuiltPrompt(user.prefix + rest[0], rest[1])

    def keys(self) -> Iterator[Key]:
        return ((user_hash, loc) for user_hash, user in self.users.items() for loc in user.rests)

    def __len__(self) -> int:
        return sum(len(user.rests) for user in self.users.values())

    @classmethod
    def from_texts(cls, texts: Iterable[tuple[Key, RebuiltPrompt]]) -> PromptStore:
        """A store of whole texts (a dry run's prompts.jsonl, rebuilt prompts), user by user."""
        by_user: dict[str, list[tuple[str, str, int]]] = {}
        for (user_hash, loc), prompt in texts:
            by_user.setdefault(user_hash, []).append((loc, prompt.text, prompt.num_tokens))
        store = cls()
        for user_hash, prompts in by_user.items():
            store.add_user(user_hash, prompts)
        return store


@dataclass
class PromptTexts:
    """Prompts decoded user by user into a PromptStore, until `budget_chars` is spent; later
    users' prompts are only counted, never decoded."""

    tokenizer: Any
    budget_chars: int
    # Decode with a private copy of the fast backend (made on first use): for a thread other
    # than the one building prompts, so two threads never borrow one Rust tokenizer at once.
    own_copy: bool = False
    store: PromptStore = field(init=False)
    _backend: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.store = PromptStore(self.budget_chars)

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
        if self.store.left_out or not users:
            self.store.left_out += sum(map(len, users))
            return
        texts = iter(self.decode([ids for user in users for _, ids in user]))
        for user in users:
            self.store.add_user(user[0][0][0], [(key[1], next(texts), len(ids))
                                                for key, ids in user])

    @property
    def notes(self) -> list[str]:
        if not self.store.left_out:
            return []
        return [f"{self.store.left_out} prompts were not decoded: the page's prompt budget is spent"]
