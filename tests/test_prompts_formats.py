"""Prompt formats: native ids frozen before the rework, tagged texts byte for byte as
reference/TRAINING_FORMATS.md writes them (golden strings typed by hand), truncation, answers."""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import orjson
import pytest

from conftest import REPO, compose
from inference_core.config import ablation as ablation_of, prompt_settings
from inference_core.data.loader import load_dataset
from inference_core.data.records import HistoryItem, Location, TestItem, Turn, UserRecord
from inference_core.prompts.answers import extract_answer
from inference_core.prompts.builder import Ablation, PromptBuilder, PromptStyle, build_prompts
from inference_core.prompts.render import gemma_envelope, profile_tags
from inference_core.prompts.settings import AnswerWrapper
from prompt_cases import (ABLATIONS, ALL_BUDGETS, BUDGETS, DATASETS, FORMATS, SYNTHETIC_STYLE,
                          describe, digest_built, format_overrides, synthetic_cases)

FROZEN = orjson.loads((REPO / "tests/fixtures/prompts/native_ids.json").read_bytes())
FROZEN_ALL = orjson.loads((REPO / "tests/fixtures/prompts/all_formats.json").read_bytes())
CHAMELEONS_TASK = ("Given the historical dialogue of a character in a movie, model the "
                   "character's speaking style and behavioral patterns, and predict the next "
                   "utterance the user would produce.")
DMSC_NOTE = "注意：请直接给出用户对该电影的评价，用 [ANSWER] 和 [/ANSWER] 标签包裹答案内容，不需要解释或思考过程。"


@lru_cache(maxsize=None)
def users_of(dataset: str):
    return load_dataset(dataset, REPO / "data" / dataset).users


def builder(tokenizer, dataset: str, ablation: str, fmt: str, budget: int = 1536, **overrides):
    cfg = compose(f"dataset={dataset}", f"ablation={ablation}", f"prompt={fmt}",
                  *[f"prompt.{k}={v}" for k, v in overrides.items()])
    return PromptBuilder(tokenizer, prompt_settings(cfg), ablation_of(cfg), budget, keep_text=True)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
@pytest.mark.parametrize("budget", BUDGETS, ids=lambda b: f"{b[0]}-{b[1]}")
def test_native_ids_are_those_of_the_original_builder(tokenizer, dataset, ablation, budget):
    b = builder(tokenizer, dataset, ablation, "native", budget[0] - budget[1])
    got = {}
    for user in users_of(dataset):
        got.update(describe(b.build_user(user)))
    assert got == FROZEN["datasets"][f"{dataset}/{ablation}/{budget[0]}-{budget[1]}"]


@pytest.mark.parametrize("case", sorted(synthetic_cases()))
def test_native_truncation_cases_keep_their_ids(tokenizer, case):
    ablation, budget, user = synthetic_cases()[case]
    b = PromptBuilder(tokenizer, PromptStyle(*SYNTHETIC_STYLE),
                      Ablation(ablation, *ABLATIONS[ablation]), budget)
    assert describe(b.build_user(user)) == FROZEN["synthetic"][case]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("dataset", sorted(p.name for p in (REPO / "data").iterdir()))
def test_every_dataset_format_and_ablation_keeps_its_prompts(tokenizer, dataset, fmt):
    """ids, texts, chat messages and truncation byte for byte as before prompts were fitted
    per history line, from no truncation down to most items unfit."""
    settings = prompt_settings(compose(f"dataset={dataset}", *format_overrides(fmt)))
    got, want = {}, {}
    for name, parts in ABLATIONS.items():
        for budget in ALL_BUDGETS:
            b = PromptBuilder(tokenizer, settings, Ablation(name, *parts), budget,
                              keep_text=True, keep_messages=True)
            key = f"{dataset}/{fmt}/{name}/{budget}"
            got[key] = digest_built(x for user in users_of(dataset) for x in b.build_user(user))
            want[key] = FROZEN_ALL[key]
    assert got == want


def dmsc_user(reviews: list[tuple[str, str, str]]) -> UserRecord:
    history = tuple(HistoryItem((), f"{movie}: ", text, stamp, order=i)
                    for i, (movie, text, stamp) in enumerate(reviews))
    item = TestItem(Location(0, 0, 0), (), "甜蜜蜜: ", None, "")
    return UserRecord("d1", {"name": "影迷小王"}, {}, "task", history, (item,))


def chameleons_user(turns: tuple[Turn, ...]) -> UserRecord:
    item = TestItem(Location(0, 0, 0), turns, "DANTE: ", None, "lines")
    return UserRecord("h1", {"name": "DANTE", "age": 22}, {}, "Movie dialogue.", (), (item,))


def only_text(b: PromptBuilder, user: UserRecord) -> str:
    prompts, unfit = build_prompts(b, [user])
    assert not unfit
    return prompts[0].text


# Two reviews whose timestamps run against the file order: training read them in file order.
REVIEWS = [("霸王别姬", "风华绝代。", "2020-01-01"), ("活着", "看哭了。", "2010-01-01")]
DMSC_S = ("用户: 影迷小王\n\n历史影评记录 (2条):\n  电影《霸王别姬》: 风华绝代。\n  电影《活着》: 看哭了。\n\n"
          "预测用户对该电影的评价：\n" + DMSC_NOTE)
DIALOGUE = (Turn("RANDAL", "Where were you?"), Turn("DANTE", " Working. "), Turn("RANDAL", "  "))
CHAMELEONS_S = ("[USER_HASH=h1]\n\n[TASK]\n" + CHAMELEONS_TASK + "\n\n[RECENT_DIALOGUE]\n"
                "User: Where were you?\nAssistant: Working.\n\n\n"
                "Continue the dialogue as the character:\n\n\n\nNote: Do not include any thinking "
                "process or explanation. Output only the character's response between [ANSWER] "
                "and [/ANSWER] tags.")


def test_tagged_dmsc_profile_and_history_chatml(tokenizer):
    b = builder(tokenizer, "DMSC", "profile_and_history", "tagged")
    assert b.envelope == "chatml"  # SmolLM2's template is ChatML, like Qwen's
    assert only_text(b, dmsc_user(REVIEWS)) == (
        "<|im_start|>system\n" + DMSC_S + "<|im_end|><|im_start|>assistant\n[ANSWER]\n")


def test_tagged_dmsc_profile_and_history_gemma(tokenizer):
    b = builder(tokenizer, "DMSC", "profile_and_history", "tagged", envelope="gemma")
    assert only_text(b, dmsc_user(REVIEWS)) == (
        "<bos><start_of_turn>user\n" + DMSC_S + "<end_of_turn>\n<start_of_turn>model\n[ANSWER]\n")


def test_tagged_chameleons_context_only_both_envelopes(tokenizer):
    user = chameleons_user(DIALOGUE)
    chatml = only_text(builder(tokenizer, "Chameleons", "context_only", "tagged"), user)
    assert chatml == ("<|im_start|>system\n" + CHAMELEONS_S
                      + "<|im_end|><|im_start|>assistant\n[ANSWER]\n")
    gemma = only_text(builder(tokenizer, "Chameleons", "context_only", "tagged",
                              envelope="gemma"), user)
    assert gemma == ("<bos><start_of_turn>user\n" + CHAMELEONS_S
                     + "<end_of_turn>\n<start_of_turn>model\n[ANSWER]\n")
    assert gemma_envelope("S") == "<bos><start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"


def test_era_a_chameleons_has_its_tail_and_no_answer_wrapper(tokenizer):
    b = builder(tokenizer, "Chameleons", "context_only", "tagged_era_a")
    assert only_text(b, chameleons_user(DIALOGUE)) == (
        "<|im_start|>system\n[USER_HASH=h1]\n\n[TASK]\n" + CHAMELEONS_TASK
        + "\n\n[RECENT_DIALOGUE]\nUser: Where were you?\nAssistant: Working.\n\n\n"
        "Predict the user's next message:<|im_end|><|im_start|>assistant\n")
    assert b.settings.answer is None and b.settings.stop_strings(("\n",)) == ()


def test_tagged_formats_stop_at_the_closing_tag_not_the_dataset_newline():
    cfg = compose("dataset=DMSC", "prompt=tagged")
    assert prompt_settings(cfg).stop_strings(("\n",)) == ("[/ANSWER]",)
    assert prompt_settings(compose("dataset=DMSC")).stop_strings(("\n",)) == ("\n",)


def test_profile_tags_follow_the_training_rules():
    user = UserRecord("u", {"name": "A", "age": 20, "gender": "", "job": "cook",
                            "unstructured": "x"},
                      {"structured": {"big_five": {"dimensions": {"openness": {"score": 3}}},
                                      "flat": {"a": 1}}}, "", (), ())
    assert profile_tags(user) == ["[USER_NAME=A]", "[USER_AGE=20]", "[DIM_BIG_FIVE_OPENNESS=3]",
                                  "[USER_JOB=cook]"]
    # One key with a "." makes the whole dict flat: every key is a tag, its value as str().
    mixed = dataclasses.replace(user, personality={"structured": {
        **user.personality["structured"], "mbti.ei": "E"}})
    assert profile_tags(mixed) == [
        "[USER_NAME=A]", "[USER_AGE=20]",
        "[DIM_BIG_FIVE={'dimensions': {'openness': {'score': 3}}}]", "[DIM_FLAT={'a': 1}]",
        "[DIM_MBTI_EI=E]", "[USER_JOB=cook]"]


def test_tagged_dmsc_truncation_drops_oldest_reviews_and_updates_the_count(tokenizer):
    reviews = [(f"电影{i}", f"第{i}条影评，" + "很好看" * 20, "2000") for i in range(60)]
    b = builder(tokenizer, "DMSC", "profile_and_history", "tagged", budget=600)
    prompt = build_prompts(b, [dmsc_user(reviews)])[0][0]
    assert prompt.num_tokens <= 600 and prompt.dropped_history > 0
    kept = 60 - prompt.dropped_history
    assert f"历史影评记录 ({kept}条):" in prompt.text
    assert [int(n) for n in re.findall(r"电影《电影(\d+)》", prompt.text)] == list(range(60 - kept, 60))
    assert list(prompt.token_ids) == tokenizer(prompt.text, add_special_tokens=False)["input_ids"]


def test_tagged_dialogue_truncation_uses_the_training_omission_note(tokenizer):
    turns = tuple(Turn("RANDAL" if i % 2 else "DANTE", f"line {i} " + "word " * 30)
                  for i in range(30))
    b = builder(tokenizer, "Chameleons", "context_only", "tagged", budget=400)
    prompt = build_prompts(b, [chameleons_user(turns)])[0][0]
    n = prompt.dropped_context
    assert prompt.num_tokens <= 400 and 0 < n < 30
    assert (CHAMELEONS_TASK + f"\n[RECENT_DIALOGUE]\n（前面省略了 {n} 轮对话）\n"
            f"{'User' if n % 2 else 'Assistant'}: line {n} ") in prompt.text
    assert prompt.text.endswith("line 29 " + "word " * 29 + "word\n\nPredict the user's next "
                                "message:<|im_end|><|im_start|>assistant\n[ANSWER]\n")
    assert "Continue the dialogue" not in prompt.text


WRAP = AnswerWrapper("[ANSWER]\n", "[/ANSWER]")


@pytest.mark.parametrize("text, by_stop, want, closed", [
    ("Nice film.\n", True, "Nice film.", True),                      # the stop string ate the tag
    ("Nice film.\n[/ANSWER] extra", False, "Nice film.", True),      # closed in the text
    ("Nice film and then it rambled", False, "Nice film and then it rambled", False),  # unclosed
    ("[ANSWER]\nNice film.\n", True, "Nice film.", True),            # nested opener
    ("Nice film.", False, "Nice film.", False),
])
def test_extract_answer(text, by_stop, want, closed):
    got = extract_answer(text, by_stop, WRAP)
    assert (got.text, got.closed) == (want, closed)
    assert extract_answer("raw text\n", False, None).text == "raw text\n"


def test_own_template_file_and_bad_values_are_one_line_errors(tmp_path, tokenizer):
    from inference_core.config import ConfigError

    own = tmp_path / "mine.j2"
    own.write_text("[ME={{ user_hash }}]{% if context %}\n{{ context | join('\\n') }}{% endif %}")
    b = builder(tokenizer, "Chameleons", "context_only", "tagged", template=str(own))
    assert only_text(b, chameleons_user(DIALOGUE)).startswith(
        "<|im_start|>system\n[ME=h1]\nUser: Where were you?")
    with pytest.raises(ConfigError, match="prompt.envelope='nope'"):
        prompt_settings(compose("prompt=tagged", "prompt.envelope=nope"))
    with pytest.raises(ConfigError, match="prompt.template=/no/such.j2"):
        prompt_settings(compose("prompt=tagged", "prompt.template=/no/such.j2"))
