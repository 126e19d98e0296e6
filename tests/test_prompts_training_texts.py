"""Training texts that reference/TRAINING_FORMATS.md gives whole, byte for byte (golden strings
typed by hand): REALTALK's task mapping (§4) and the era-B Note lines of the Lovink datasets,
whose questionnaire eras A and B use the generic layout (§6)."""
from __future__ import annotations

import pytest

from conftest import compose
from inference_core.config import ConfigError, prompt_settings
from inference_core.data.records import HistoryItem, Location, TestItem, Turn, UserRecord
from test_prompts_formats import builder, only_text, users_of

REALTALK_ZH = "基于用户在 REALTALK 数据集中的历史对话数据，模拟该用户的对话风格和行为模式"
REALTALK_TASK = ("Given the historical dialogue of a user on REALTALK, model the user's speaking "
                 "style and behavioral patterns, and predict the next utterance the user would "
                 "produce.")
REALTALK_TAIL = ("\n\n\n预测用户的下一条消息：\n\n"
                 "注意：请直接给出用户的下一条消息，用 [ANSWER] 和 [/ANSWER] 标签包裹答案内容，不需要解释或思考过程。")
CHATML_OPEN = "<|im_start|>system\n"
CHATML_ANSWER = "<|im_end|><|im_start|>assistant\n[ANSWER]\n"


def realtalk_text(tokenizer, user: UserRecord) -> str:
    return only_text(builder(tokenizer, "REALTALK", "context_only", "tagged"), user)


def test_realtalk_chinese_description_becomes_the_trained_english_task(tokenizer):
    user = next(u for u in users_of("REALTALK") if u.description == REALTALK_ZH)
    assert realtalk_text(tokenizer, user) == (
        CHATML_OPEN + "[USER_HASH=rt-06]\n\n[TASK]\n" + REALTALK_TASK + "\n\n[RECENT_DIALOGUE]\n"
        "User: are you coming to the climbing gym tonight?\n"
        "Assistant: maybe, my arms are still dead from sunday\n"
        "User: come on, we'll do the easy wall" + REALTALK_TAIL + CHATML_ANSWER)


def test_realtalk_any_other_description_stays_as_written(tokenizer):
    # One character off the mapped text (a closing "。") is another description.
    item = TestItem(Location(0, 0, 0), (Turn("Marco", "you up?"),), "", None, "chat")
    user = UserRecord("rt-x", {"name": "Lena"}, {}, REALTALK_ZH + "。", (), (item,))
    assert realtalk_text(tokenizer, user) == (
        CHATML_OPEN + "[USER_HASH=rt-x]\n\n[TASK]\n" + REALTALK_ZH + "。\n\n[RECENT_DIALOGUE]\n"
        "User: you up?" + REALTALK_TAIL + CHATML_ANSWER)


def test_era_b_lovink_dialogue_has_its_note_line(tokenizer):
    item = TestItem(Location(0, 0, 0), (Turn("小助手", "今天过得怎么样？"), Turn("user", "还行吧"),
                                        Turn("小助手", "发生什么了？")), "", None, "chat")
    user = UserRecord("lv-1", {"name": "阿青", "age": 23}, {}, "ignored", (), (item,))
    b = builder(tokenizer, "LovinkDialogue", "profile_and_context", "tagged_era_b")
    assert only_text(b, user) == (
        CHATML_OPEN + "[USER_HASH=lv-1]\n\n[USER_PROFILE]\n[USER_NAME=阿青]\n[USER_AGE=23]\n\n"
        "[TASK]\n基于用户在 Lovink 对话中的历史数据，模拟该用户的对话行为模式\n\n[RECENT_DIALOGUE]\n"
        "User: 今天过得怎么样？\nAssistant: 还行吧\nUser: 发生什么了？\n\n\n预测用户的下一条消息：\n\n"
        "注意：请直接给出用户的下一条消息，用 [ANSWER] 和 [/ANSWER] 标签包裹答案内容，不需要解释或思考过程。"
        + CHATML_ANSWER)


def questionnaire_user() -> UserRecord:
    history = tuple(HistoryItem((Turn("questionnaire", q),), "", a, None, order=i)
                    for i, (q, a) in enumerate([("你喜欢运动吗？", "4"), ("你常熬夜吗？", "B")]))
    item = TestItem(Location(0, 0, 0), (Turn("questionnaire", "你喜欢旅行吗？"),), "", None, "q")
    return UserRecord("lq-1", {"name": "问卷用户7"}, {}, "预测该用户对新问题的回答。", history,
                      (item,))


QUESTIONNAIRE_GENERIC = ("[USER_HASH=lq-1]\n\n[TASK]\n预测该用户对新问题的回答。\n\n[HISTORY]\n"
                         "1. 问题：你喜欢运动吗？\n回答：4\n2. 问题：你常熬夜吗？\n回答：B\n\n\n"
                         "预测用户针对该问题的回复：")


def test_era_b_lovink_questionnaire_generic_layout_and_note_line(tokenizer):
    b = builder(tokenizer, "LovinkQuestionnaire", "history_only", "tagged_era_b")
    assert only_text(b, questionnaire_user()) == (
        CHATML_OPEN + QUESTIONNAIRE_GENERIC + "\n\n"
        "注意：请直接给出用户的回答，用 [ANSWER] 和 [/ANSWER] 标签包裹答案内容，不需要解释或思考过程。"
        + CHATML_ANSWER)


def test_era_a_lovink_questionnaire_generic_layout_without_note_or_wrapper(tokenizer):
    b = builder(tokenizer, "LovinkQuestionnaire", "history_only", "tagged_era_a")
    assert only_text(b, questionnaire_user()) == (
        CHATML_OPEN + QUESTIONNAIRE_GENERIC + "<|im_end|><|im_start|>assistant\n")
    # Era C keeps its own builder's layout: lines joined by "\n", USER_HASH = the profile name.
    era_c = only_text(builder(tokenizer, "LovinkQuestionnaire", "history_only", "tagged"),
                      questionnaire_user())
    assert era_c.startswith(CHATML_OPEN + "[USER_HASH=问卷用户7]\n[TASK]\n预测该用户对新问题的回答。\n\n")


def test_reset_names_only_settings_of_the_format():
    with pytest.raises(ConfigError, match=r"dataset.prompt.tagged_era_b.reset names 'parts'"):
        prompt_settings(compose("dataset=LovinkQuestionnaire", "prompt=tagged_era_b",
                                "dataset.prompt.tagged_era_b.reset=[parts]"))
