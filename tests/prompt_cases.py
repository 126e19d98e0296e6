"""Prompt-building cases shared by the prompt tests: the sample datasets and synthetic users.

tests/fixtures/prompts/native_ids.json froze, per case, what the original native builder made
(length and sha256 of the token ids, truncation counts); the native format must keep it exactly.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import orjson

from inference_core.data.records import HistoryItem, Location, TestItem, Turn, UserRecord

ABLATIONS = {
    "profile_and_history_and_context": (True, True, True),
    "profile_and_history": (True, True, False),
    "profile_and_context": (True, False, True),
    "history_and_context": (False, True, True),
    "profile_only": (True, False, False),
    "history_only": (False, True, False),
    "context_only": (False, False, True),
}
DATASETS = ("Chameleons", "DMSC")
# (max_model_len, max_tokens): the default, a tight one (most history dropped, some items cannot
# fit at all) and one in between.
BUDGETS = ((2048, 512), (700, 512), (912, 512))
# The synthetic users of test_prompts.py: (style, ablation, budget, user arguments).
SYNTHETIC_STYLE = ("Reply with the next line only.", "Past lines", 1)
PROFILE_MARK = "likes-vintage-comics"
HISTORY_MARK = "old-history-line"
CONTEXT_MARK = "context-turn-text"
CUE = "霸王别姬:"


def make_user(n_history: int = 3, context: tuple[Turn, ...] | None = None) -> UserRecord:
    history = tuple(HistoryItem((Turn("RANDAL", "earlier question"),), "DANTE: ",
                                f"{HISTORY_MARK} number {i}", f"2001-01-{i + 1:02d}")
                    for i in range(n_history))
    item = TestItem(Location(0, 0, 0), context or (Turn("RANDAL", CONTEXT_MARK),),
                    CUE + " ", None, "")
    return UserRecord("u1", {"name": "DANTE", "hobby": PROFILE_MARK}, {}, "Movie dialogue.",
                      history, (item,))


def synthetic_cases() -> dict[str, tuple[str, int, UserRecord]]:
    """name -> (ablation name, budget, user): the truncation paths, cut_tokens included."""
    turns = tuple(Turn("RANDAL", f"turn {i} " + "blah " * 40) for i in range(10))
    giant = Turn("RANDAL", "start-of-giant " + "word " * 20_000 + "end-of-giant")
    return {
        "history60_full": ("profile_and_history", 100_000, make_user(60)),
        "history60_third": ("profile_and_history", 458, make_user(60)),
        "history60_most": ("profile_and_history", 1012, make_user(60)),
        "context_drop": ("profile_and_history_and_context", 600, make_user(20, turns)),
        "giant_turn": ("profile_and_history_and_context", 600, make_user(5, turns + (giant,))),
        "unfit": ("profile_only", 20, make_user()),
        "all_parts": ("profile_and_history_and_context", 1500, make_user()),
    }


def ids_digest(ids: Iterable[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def describe(built: Iterable[Any]) -> dict[str, Any]:
    """What the fixture keeps per item: Prompt facts, or the reason it could not be built."""
    out: dict[str, Any] = {}
    for b in built:
        if isinstance(b, tuple):
            out[b[0].key()] = {"unfit": b[1]}
            continue
        ids = list(b.token_ids)
        out[b.location.key()] = {"n": len(ids), "sha256": ids_digest(ids),
                                 "dropped_history": b.dropped_history,
                                 "dropped_context": b.dropped_context, "cut_tokens": b.cut_tokens}
    return out


# tests/fixtures/prompts/all_formats.json froze, per (dataset, format, ablation, budget), what the
# builder made before prompts were fitted per history line (issue 29): every dataset in data/,
# every format (tagged in both envelopes), no truncation (100000) down to most items unfit.
# The REALTALK and LovinkQuestionnaire era-A/B entries were frozen again with that same builder
# (plus the fix for a turn cut to nothing) after issue 30 changed their data and formats.
FORMATS = {"native": (), "tagged": (), "tagged_gemma": ("prompt=tagged", "prompt.envelope=gemma"),
           "tagged_era_a": (), "tagged_era_b": ()}
ALL_BUDGETS = (100_000, 1536, 600, 300, 120)


def format_overrides(fmt: str) -> tuple[str, ...]:
    return FORMATS[fmt] or (f"prompt={fmt}",)


def digest_built(built: Iterable[Any]) -> dict[str, Any]:
    """Counts and one sha256 over every item's ids, truncation counts, text and messages (or
    its unfit reason), in build order."""
    digest = hashlib.sha256()
    counts = {"prompts": 0, "truncated": 0, "unfit": 0}
    for b in built:
        if isinstance(b, tuple):
            counts["unfit"] += 1
            digest.update(orjson.dumps([b[0].key(), b[1]]))
            continue
        counts["prompts"] += 1
        counts["truncated"] += b.truncated
        digest.update(orjson.dumps([b.location.key(), list(b.token_ids), b.dropped_history,
                                    b.dropped_context, b.cut_tokens, b.text, b.messages]))
    return {**counts, "sha256": digest.hexdigest()}
