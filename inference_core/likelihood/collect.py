"""A job's scoring requests and their results, item by item: which texts each item scores (its
reference's target, every option of its answer set), and its figures once all are back.

Prompts arrive a user at a time (`add_user`); a user is finished when every item is scored or
named unscored (no reference and no answer set, or a target that cannot fit the window).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from inference_core.data.records import Location, TestItem, UserRecord
from inference_core.engine import ScoringRequest, TokenScores
from inference_core.likelihood.figures import option_figures, target_figures
from inference_core.likelihood.targets import ScoredSequence, Target, TargetBuilder, answer_slot
from inference_core.outputs.answer_sets import AnswerSet, answer_set
from inference_core.prompts.builder import Prompt

# (user, item, prompt budget) -> the item's prompt fitted to that budget, or (location, why).
Refit = Callable[[UserRecord, TestItem, int], "Prompt | tuple[Location, str]"]
NO_REFERENCE = "no reference to score (the test file has none: dataset.holdout=last makes one)"


@dataclass(slots=True)  # one per item, kept to the end of the run (figures only, once written)
class ScoredItem:
    user_hash: str
    location: Location
    prompt_tokens: int
    truncated: bool
    reference: str | None
    answers: AnswerSet | None = None
    sequences: list[ScoredSequence] = field(default_factory=list)
    scores: dict[int, TokenScores] = field(default_factory=dict)
    why: str | None = None  # unscored, and why
    figures: dict[str, Any] | None = None
    # The scored prompt's ids (the report page's prompt) until the user's file is written.
    context_ids: Any = None

    @property
    def done(self) -> bool:
        return self.figures is not None

    def finish(self) -> None:
        """The figures, once every sequence is back (a failed one makes the item unscored)."""
        failed = next((s.error for s in self.scores.values() if s.error), None)
        if failed is not None:
            self.why = failed
        figures: dict[str, Any] = {"scored": self.why is None}
        if self.why is not None:
            figures["why"] = self.why
        else:
            figures["merged_boundary"] = any(s.merged_boundary for s in self.sequences)
            reference = self.reference_sequence()
            shown = self.sequences[0 if reference is None else reference]
            figures["context_tokens"] = shown.target_start
            self.context_ids = shown.token_ids[:shown.target_start]
            if reference is not None:
                figures.update(target_figures(self.sequences[reference], self.scores[reference]))
            figures.update(self.option_part())
        self.figures = figures
        self.sequences, self.scores = [], {}

    def reference_sequence(self) -> int | None:
        """The sequence of the reference's own target: its own, or the option it states as
        written."""
        stated = self.reference.strip() if self.reference else None
        return next((k for k, s in enumerate(self.sequences) if not s.slot_tokens and (
            s.option is None or (stated is not None and s.option == stated))), None)

    def option_scores(self) -> list[tuple[str, float, int, int]]:
        """(option, log-likelihood, bytes, tokens) of every option: of its whole target, or, for
        a one-token set read at its slot, of the target up to and including the option."""
        slot = next((k for k, s in enumerate(self.sequences) if s.slot_tokens), None)
        if slot is None:
            return [(s.option, sum(self.scores[k].logprobs), s.target_bytes, s.target_tokens)
                    for k, s in enumerate(self.sequences) if s.option is not None]
        sequence, scores = self.sequences[slot], self.scores[slot]
        head = sum(scores.logprobs[sequence.ignored:])
        tokens = len(scores.logprobs) - sequence.ignored + 1
        return [(option, head + following, sequence.head_bytes + len(option.encode("utf-8")),
                 tokens) for option, following in zip(sequence.slot_options,
                                                        scores.next_logprobs)]

    def option_part(self) -> dict[str, Any]:
        if self.answers is None:
            return {}
        scored = self.option_scores()
        gold = self.answers.gold(self.reference)
        return {"options": [{"option": o, "logprob": lp, "bytes": b, "tokens": t}
                            for o, lp, b, t in scored],
                **option_figures([(o, lp, b) for o, lp, b, _ in scored], gold,
                                 self.answers.values)}


def one_prefill_per_slot(sequences: list[ScoredSequence],
                         reference: str | None) -> list[ScoredSequence]:
    """One-token options read at their slot in one request (answer_slot), the reference's own
    target still scored whole; the sequences as they are otherwise."""
    slot = answer_slot(sequences)
    if slot is None:
        return sequences
    stated = reference.strip() if reference else None
    kept = [s for s in sequences if s.option is None or s.option == stated]
    return kept + [slot]


class ScoreCollector:
    """Every scored item of one job, in request order; a user is done when all theirs are."""

    def __init__(self, targets: TargetBuilder, handlers: tuple[str, ...], window: int,
                 refit: Refit) -> None:
        self.targets = targets
        self.handlers = handlers
        self.window = window
        self.refit = refit
        self.items: list[ScoredItem] = []
        self.by_user: dict[str, list[ScoredItem]] = {}
        self.open_items: dict[str, int] = {}
        self.scored_tokens = 0

    def add_user(self, user: UserRecord, prompts: list[Prompt],
                 tests: dict[Location, TestItem]) -> list[ScoringRequest]:
        """Every prompt of one user at once; their scoring requests."""
        requests: list[ScoringRequest] = []
        items = self.by_user.setdefault(user.user_hash, [])
        for prompt in prompts:
            test = tests[prompt.location]
            item = ScoredItem(user.user_hash, prompt.location, prompt.num_tokens,
                              prompt.truncated, test.reference, answer_set(self.handlers, test))
            index = len(self.items)
            self.items.append(item)
            items.append(item)
            self.plan(item, user, test, prompt)
            if item.why is not None:
                item.finish()
                item.context_ids = prompt.token_ids  # the report page shows its prompt
                continue
            self.open_items[user.user_hash] = self.open_items.get(user.user_hash, 0) + 1
            requests += [ScoringRequest(f"{index}.{k}", s.token_ids, s.target_start,
                                        next_token_ids=s.slot_tokens)
                         for k, s in enumerate(item.sequences)]
        return requests

    def plan(self, item: ScoredItem, user: UserRecord, test: TestItem, prompt: Prompt) -> None:
        """The item's scored sequences, fitted to the window as generation fits its prompt: the
        context cut further where a target is longer than generation's max_tokens, never the
        target."""
        targets = self.item_targets(item)
        if not targets:
            item.why = NO_REFERENCE
            return
        for _ in range(3):  # a refit's tokens can differ by a few from the estimate: retry
            assert prompt.text is not None, "scoring needs the prompt's text (keep_text)"
            sequences = self.targets.sequences(self.targets.training_prompt(prompt.text), targets)
            over = max(len(s.token_ids) for s in sequences) - self.window
            if over <= 0:
                item.sequences = one_prefill_per_slot(sequences, item.reference)
                item.prompt_tokens, item.truncated = prompt.num_tokens, prompt.truncated
                return
            refitted = self.refit(user, test, prompt.num_tokens - over)
            if not isinstance(refitted, Prompt):
                break
            prompt = refitted
        longest = max(s.target_tokens for s in sequences)
        item.why = (f"the target ({longest} tokens) does not fit max_model_len={self.window} "
                    f"with the prompt's fixed part")

    def item_targets(self, item: ScoredItem) -> list[Target]:
        """The reference's target (unless it is one of the options, as written), then every
        option's."""
        options = item.answers.options if item.answers else ()
        stated = item.reference.strip() if item.reference else ""
        own = [self.targets.target(stated)] if stated and stated not in options else []
        return own + [self.targets.target(o, o) for o in options]

    def add(self, scores: TokenScores) -> str | None:
        """Keep one sequence's scores; the user's hash when this finished their last item."""
        index, _, k = scores.request_id.partition(".")
        item = self.items[int(index)]
        item.scores[int(k)] = scores
        self.scored_tokens += len(scores.logprobs)
        if item.done or len(item.scores) < len(item.sequences):
            return None
        item.finish()
        self.open_items[item.user_hash] -= 1
        return item.user_hash if self.open_items[item.user_hash] == 0 else None

    def user_done(self, user_hash: str) -> bool:
        return self.open_items.get(user_hash, 0) == 0

    def user_items(self, user_hash: str) -> dict[Location, ScoredItem]:
        return {i.location: i for i in self.by_user.get(user_hash, [])}
