"""Gather completions per item, retry blank samples, and say when a user is finished."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inference_core.engine import Completion, GenerationRequest
from inference_core.prompts.builder import Prompt
from inference_core.data.records import Location


@dataclass
class ItemResult:
    prompt: Prompt
    reference: str | None
    num_samples: int
    texts: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    output_tokens: list[int] = field(default_factory=list)
    # The engine's reason when a request for this item failed (e.g. an endpoint's 400 answer).
    error: str | None = None

    @property
    def full(self) -> bool:
        return len(self.texts) == self.num_samples

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "location": self.prompt.location.as_dict(),
            "prompt_tokens": self.prompt.num_tokens,
            "truncated": self.prompt.truncated,
            "generated_samples": self.texts,
            "finish_reasons": self.finish_reasons,
            "output_tokens": self.output_tokens,
        }
        if self.reference is not None:
            out["reference"] = self.reference
        return out


class Collector:
    """Per-item samples in request order; a user is done when all their items are full."""

    def __init__(self, prompts: list[Prompt], references: dict[Location, str | None],
                 num_samples: int) -> None:
        self.items = [ItemResult(p, references.get(p.location), num_samples) for p in prompts]
        self.by_user: dict[str, list[ItemResult]] = {}
        for item in self.items:
            self.by_user.setdefault(item.prompt.user_hash, []).append(item)
        self.open_items = {user: len(items) for user, items in self.by_user.items()}
        self.generated_tokens = 0

    def requests(self) -> list[GenerationRequest]:
        """What is still missing: all samples at first, then only the blank ones again."""
        # A failed request is not asked again in this run: its answer would not change (a 400);
        # re-running the command retries it.
        return [GenerationRequest(str(i), r.prompt.token_ids, r.num_samples - len(r.texts))
                for i, r in enumerate(self.items) if not r.full and r.error is None]

    def add(self, completion: Completion) -> tuple[int, str | None]:
        """Keep the non-blank samples; (samples kept, user_hash if that user is now done)."""
        item = self.items[int(completion.request_id)]
        self.generated_tokens += sum(completion.output_tokens)
        if completion.error is not None:
            item.error = completion.error
        kept = 0
        for text, reason, tokens in zip(completion.texts, completion.finish_reasons,
                                        completion.output_tokens):
            if text.strip() and not item.full:
                item.texts.append(text)
                item.finish_reasons.append(reason)
                item.output_tokens.append(tokens)
                kept += 1
        if kept and item.full:
            user = item.prompt.user_hash
            self.open_items[user] -= 1
            if self.open_items[user] == 0:
                return kept, user
        return kept, None

    def user_items(self, user_hash: str) -> list[ItemResult]:
        return self.by_user[user_hash]

    def complete(self) -> list[ItemResult]:
        return [r for r in self.items if r.full]

    def incomplete(self) -> list[ItemResult]:
        return [r for r in self.items if not r.full]
