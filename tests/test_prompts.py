"""Prompt building: each ablation holds exactly its parts, the cue always, and the budget holds."""
from __future__ import annotations

import re

import pytest

from inference_core.prompts.builder import Ablation, Prompt, PromptBuilder, PromptStyle, build_prompts
from inference_core.data.records import Location, TestItem, Turn, UserRecord
from prompt_cases import (ABLATIONS, CONTEXT_MARK, CUE, HISTORY_MARK, PROFILE_MARK,
                          SYNTHETIC_STYLE, make_user)

STYLE = PromptStyle(*SYNTHETIC_STYLE)



def render(tokenizer, builder: PromptBuilder, user: UserRecord) -> tuple[Prompt, str]:
    prompts, unfit = build_prompts(builder, [user])
    assert not unfit
    return prompts[0], tokenizer.decode(prompts[0].token_ids)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_has_exactly_its_parts_and_always_the_cue(tokenizer, name):
    profile, history, context = ABLATIONS[name]
    builder = PromptBuilder(tokenizer, STYLE, Ablation(name, profile, history, context), 1500)
    _, text = render(tokenizer, builder, make_user())
    assert (PROFILE_MARK in text) is profile
    assert (HISTORY_MARK in text) is history
    assert (CONTEXT_MARK in text) is context
    assert CUE in text


def test_prompts_of_one_user_share_a_prefix_and_stay_adjacent(tokenizer):
    user = make_user()
    second = TestItem(Location(0, 0, 1), (Turn("RANDAL", "another turn"),), CUE, None, "")
    user = UserRecord(user.user_hash, user.profile, user.personality, user.description,
                      user.history, user.items + (second,))
    other = UserRecord("u2", {"name": "RANDAL"}, {}, "", (), (TestItem(
        Location(1, 0, 0), (), "RANDAL: ", None, ""),))
    builder = PromptBuilder(tokenizer, STYLE, Ablation("all", True, True, True), 1500)
    prompts, _ = build_prompts(builder, [user, other])
    assert [p.user_hash for p in prompts] == ["u1", "u1", "u2"]
    a, b = prompts[0].token_ids, prompts[1].token_ids
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    history_tokens = len(tokenizer(HISTORY_MARK * 3)["input_ids"])
    assert shared > history_tokens  # task, profile and history all come before the item's part


def test_truncation_respects_the_budget_and_drops_oldest_history_first(tokenizer):
    ablation = Ablation("profile_and_history", True, True, False)
    full = PromptBuilder(tokenizer, STYLE, ablation, 100_000)
    untruncated, _ = render(tokenizer, full, make_user(n_history=60))
    budget = untruncated.num_tokens // 3
    prompt, text = render(tokenizer, PromptBuilder(tokenizer, STYLE, ablation, budget),
                          make_user(n_history=60))
    assert prompt.num_tokens <= budget
    assert prompt.truncated and prompt.dropped_history > 0 and prompt.dropped_context == 0
    kept = [int(n) for n in re.findall(rf"{HISTORY_MARK} number (\d+)", text)]
    assert kept == list(range(60 - len(kept), 60))  # the newest survive, in order
    assert CUE in text and PROFILE_MARK in text


def test_oldest_context_turns_go_after_history_and_a_huge_turn_keeps_its_end(tokenizer):
    ablation = Ablation("all", True, True, True)
    turns = tuple(Turn("RANDAL", f"turn {i} " + "blah " * 40) for i in range(10))
    giant = Turn("RANDAL", "start-of-giant " + "word " * 20_000 + "end-of-giant")
    builder = PromptBuilder(tokenizer, STYLE, ablation, 600)
    prompt, text = render(tokenizer, builder, make_user(n_history=20, context=turns))
    assert prompt.num_tokens <= 600
    assert prompt.dropped_history == 20 and 0 < prompt.dropped_context < 10
    assert "turn 9" in text and "turn 0 " not in text
    prompt, text = render(tokenizer, builder, make_user(n_history=5, context=turns + (giant,)))
    assert prompt.num_tokens <= 600 and prompt.cut_tokens > 0
    assert "end-of-giant" in text and "start-of-giant" not in text and CUE in text


def test_an_item_that_cannot_fit_at_all_is_reported_not_sent(tokenizer):
    builder = PromptBuilder(tokenizer, STYLE, Ablation("profile_only", True, False, False), 20)
    prompts, unfit = build_prompts(builder, [make_user()])
    assert prompts == [] and unfit and "over the budget" in unfit[0][2]


def test_a_turn_cut_to_nothing_that_still_does_not_fit_is_reported_not_retried(tokenizer):
    """The context header alone is over the budget: cutting the turn further cannot help."""
    ablation = Ablation("profile_and_context", True, False, True)
    user = make_user(context=(Turn("RANDAL", "a short turn"),))
    fixed = PromptBuilder(tokenizer, STYLE, Ablation("profile_only", True, False, False), 1500)
    budget = render(tokenizer, fixed, user)[0].num_tokens + 2
    prompts, unfit = build_prompts(PromptBuilder(tokenizer, STYLE, ablation, budget), [user])
    assert prompts == [] and unfit[0][2] == "prompt does not fit the budget"
