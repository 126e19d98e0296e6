"""Gather completions per item, redraw unusable samples, and say when a user is finished.

Prompts arrive a user at a time while the engine already generates (`add_user`); every sample
passes the output handler (blank text, answer tags, ratings...), and what it cannot use is drawn
again in the next round, never replaced by a placeholder.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from inference_core.data.records import Location, TestItem
from inference_core.engine import Completion, GenerationRequest
from inference_core.outputs.registry import OutputHandler, make_output_handler
from inference_core.prompts.builder import Prompt
from inference_core.rundir.layout import UserItem


def request_seed(run_seed: int, location: Location, round_: int) -> int:
    """A seed that depends only on the run seed, the item and the redraw round (not on batching)."""
    digest = hashlib.sha256(f"{run_seed}/{location.key()}/{round_}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(slots=True)  # one per item, kept to the end of the run (counts, once released)
class ItemResult:
    prompt: Prompt
    test_item: TestItem | None
    num_samples: int
    texts: list[str] = field(default_factory=list)
    raw_texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    flags: Counter = field(default_factory=Counter)
    unusable: int = 0  # samples the handler refused (redrawn)
    error: str | None = None  # the engine could not serve this item at all
    # The samples it had when its user's file was written and its texts and prompt ids were
    # dropped (release); None while it holds them.
    written: int | None = None

    @property
    def full(self) -> bool:
        return (len(self.texts) if self.written is None else self.written) == self.num_samples

    @property
    def closed(self) -> bool:
        """Nothing more will come for this item in this session."""
        return self.full or self.error is not None

    @property
    def reference(self) -> str | None:
        return self.test_item.reference if self.test_item else None

    def release(self) -> None:
        """Forget what the user's file now holds (samples, the prompt's ids): a long run keeps
        only each item's counts and flags, not every prompt and sample until it ends."""
        self.written = len(self.texts)
        self.texts, self.raw_texts, self.finish_reasons, self.output_tokens = [], [], [], []
        self.prompt = replace(self.prompt, token_ids=array("i"), text=None, messages=None)

    def user_item(self) -> UserItem:
        """The item as its user file holds it."""
        extra: dict[str, Any] = {}
        if self.raw_texts != self.texts:  # a handler changed them: keep what was generated
            extra["raw_samples"] = list(self.raw_texts)
        if self.flags:
            extra["flags"] = dict(self.flags)
        return UserItem(self.prompt.location, self.prompt.num_tokens, self.prompt.truncated,
                        tuple(self.texts), tuple(self.finish_reasons), tuple(self.output_tokens),
                        self.reference, extra)


class Collector:
    """Per-item samples in request order; a user is done when all their items are closed."""

    def __init__(self, num_samples: int, seed: int, handler: OutputHandler | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.handler = handler or make_output_handler((), {})  # blank samples are unusable
        self.items: list[ItemResult] = []
        self.by_user: dict[str, list[ItemResult]] = {}
        self.open_items: dict[str, int] = {}
        self.generated_tokens = 0

    def add_user(self, prompts: list[Prompt], tests: dict[Location, TestItem],
                 ) -> list[GenerationRequest]:
        """Register every prompt of one user at once (so the user cannot finish half-registered);
        their first requests."""
        first = len(self.items)
        for p in prompts:
            item = ItemResult(p, tests.get(p.location), self.num_samples)
            self.items.append(item)
            self.by_user.setdefault(p.user_hash, []).append(item)
            self.open_items[p.user_hash] = self.open_items.get(p.user_hash, 0) + 1
        return [self._request(i, 0) for i in range(first, len(self.items))]

    def _request(self, index: int, round_: int) -> GenerationRequest:
        item = self.items[index]
        return GenerationRequest(str(index), item.prompt.token_ids,
                                 item.num_samples - len(item.texts),
                                 seed=request_seed(self.seed, item.prompt.location, round_),
                                 messages=item.prompt.messages)

    def redraws(self, round_: int) -> list[GenerationRequest]:
        """The samples still missing after a round (blank or unusable ones), to draw again."""
        return [self._request(i, round_) for i, r in enumerate(self.items) if not r.closed]

    def add(self, completion: Completion) -> tuple[int, str | None]:
        """Keep the usable samples; (samples kept, user_hash if that user is now done)."""
        item = self.items[int(completion.request_id)]
        was_closed = item.closed
        self.generated_tokens += sum(completion.output_tokens)
        if completion.error is not None and not completion.texts:
            item.error = completion.error
        kept = 0
        stops = completion.stop_reasons or (None,) * len(completion.texts)
        for text, reason, tokens, stop in zip(completion.texts, completion.finish_reasons,
                                              completion.output_tokens, stops):
            if item.full:
                break
            sample = self.handler(text, item.test_item, stop)
            if sample is None:
                item.unusable += 1
                continue
            item.texts.append(sample.text)
            item.raw_texts.append(sample.raw)
            item.finish_reasons.append(reason)
            item.output_tokens.append(tokens)
            item.flags.update(sample.flags)
            kept += 1
        if item.closed and not was_closed:
            user = item.prompt.user_hash
            self.open_items[user] -= 1
            if self.open_items[user] == 0:
                return kept, user
        return kept, None

    def user_items(self, user_hash: str) -> list[ItemResult]:
        return self.by_user[user_hash]

    def release(self, user_hash: str) -> None:
        """A finished user's items once their file is made: see ItemResult.release."""
        for item in self.by_user[user_hash]:
            item.release()

    def clear(self) -> None:
        """Forget every item (the shard report has their counts): the merge, metrics and
        report that follow read the user files instead."""
        self.items.clear()
        self.by_user.clear()
        self.open_items.clear()

    def complete(self) -> list[ItemResult]:
        return [r for r in self.items if r.full]

    def incomplete(self) -> list[ItemResult]:
        return [r for r in self.items if not r.full]

    def flag_totals(self) -> Counter:
        total: Counter = Counter()
        for r in self.items:
            total.update(r.flags)
        return total
