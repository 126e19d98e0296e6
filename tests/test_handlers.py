"""Output handlers on hand-written texts: ratings, choices, Japanese script share, answer blocks."""
from __future__ import annotations

import sys

import pytest

from inference_core.config import ConfigError
from inference_core.data.records import Location, TestItem, Turn
from inference_core.outputs import HandledSample, handler_names, make_output_handler
from inference_core.outputs.choice import parse_options
from inference_core.outputs.script import japanese_share

LIKERT = "我喜欢尝试没吃过的食物。（1=非常不同意，2=不同意，3=一般，4=同意，5=非常同意）"
CHOICE = "你周末通常怎么度过？\nA. 在家看书或追剧\nB. 和朋友出去聚会\nC. 运动健身\nD. 加班或学习"


def item(*questions: str) -> TestItem:
    return TestItem(Location(0, 0, 0), tuple(Turn("questionnaire", q) for q in questions), "",
                    None, "")


def handle(names, text, test_item=None, options=None, stop=None):
    return make_output_handler(names, options or {})(text, test_item or item(), stop)


def test_registered_names():
    assert {"answer_block", "choice", "rating", "script_ratio"} <= set(handler_names())


def test_unknown_handler_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="dataset.output_handler='stars'.*choice, rating"):
        make_output_handler(["stars"], {})


def test_no_handler_keeps_text_and_blank_is_unusable():
    assert handle([], " hello ") == HandledSample(" hello ", " hello ", frozenset())
    assert handle([], "  \n") is None


@pytest.mark.parametrize("text,rating,flags", [
    ("4", "4.0", set()), ("4.5", "4.5", set()), ("Rating: 3.5/5", "3.5", set()),
    ("I'd say 4 out of 5", "4.0", set()), ("8/10", "4.0", {"rating_rescaled"}),
    ("This 1995 film gets a 3.7", "3.5", {"rating_snapped"}), ("评分：４．５", "4.5", set()),
    ("四星半", "4.5", set()), ("三点五分", "3.5", set()), ("0.5", "0.5", set()),
])
def test_rating_reads_the_rating_and_keeps_the_raw_text(text, rating, flags):
    sample = handle(["rating"], text)
    assert sample.text == rating and sample.raw == text and sample.flags == flags


@pytest.mark.parametrize("text", ["Rating: 7", "0", "5.5 stars", "no idea", "很好看", ""])
def test_rating_out_of_range_or_unreadable_is_unusable(text):
    assert handle(["rating"], text) is None


def test_parse_options_likert_choice_and_open():
    likert = parse_options(LIKERT)
    assert likert.keys == ("1", "2", "3", "4", "5") and likert.ordered
    assert likert.labels[0] == "非常不同意"
    choice = parse_options(CHOICE)
    assert choice.keys == ("A", "B", "C", "D") and not choice.ordered
    assert parse_options("Which? A) tea B) coffee C) water").labels == ("tea", "coffee", "water")
    assert parse_options("最近一次让你开心的小事是什么？") is None


@pytest.mark.parametrize("answer,key", [
    ("4", "4"), ("4分", "4"), ("同意", "4"), ("非常同意！", "5"), ("我不同意", "2"),
    ("一般般吧", "3"),
])
def test_choice_snaps_likert_answers(answer, key):
    assert handle(["choice"], answer, item(LIKERT)).text == key


@pytest.mark.parametrize("answer,key", [
    ("B", "B"), ("选C", "C"), ("（A）在家看书", "A"), ("运动健身吧", "C"), ("和朋友聚会", "B"),
])
def test_choice_snaps_multiple_choice_answers(answer, key):
    sample = handle(["choice"], answer, item(CHOICE))
    assert sample.text == key and sample.raw == answer
    assert ("choice_snapped" in sample.flags) == (answer != key)


def test_choice_uses_the_last_context_turn_and_rejects_what_matches_nothing():
    assert handle(["choice"], "a lot of things", item(CHOICE)) is None
    assert handle(["choice"], "完全说不上来", item(CHOICE, LIKERT)) is None
    assert handle(["choice"], "4", item(CHOICE, LIKERT)).text == "4"


def test_choice_without_options_keeps_the_free_text():
    sample = handle(["choice"], " 楼下的猫让我摸了。 ", item("最近一次让你开心的小事是什么？"))
    assert sample.text == "楼下的猫让我摸了。" and sample.flags == {"free_text"}


@pytest.mark.parametrize("text,usable", [
    ("鍋ですね！家族で毎週食べてます。", True), ("はい、そうです（笑）", True),
    ("Yes, I love hot pot!", False), ("OK ですね", True), ("lol www ok sure 笑", False),
    ("😀😀!!", False), ("東京", True),
])
def test_script_ratio_needs_thirty_percent_kana_or_kanji(text, usable):
    assert (handle(["script_ratio"], text) is not None) == usable


def test_script_ratio_share_and_options():
    assert japanese_share("はいyes") == pytest.approx(2 / 5)
    assert japanese_share("!!") is None
    assert handle(["script_ratio"], "はいyes", options={"min_script_ratio": 0.5}) is None
    with pytest.raises(ConfigError, match="min_script_ratio"):
        make_output_handler(["script_ratio"], {"min_script_ratio": 30})


def test_answer_block_then_rating_chain():
    from inference_core.prompts.settings import AnswerWrapper

    wrapper = AnswerWrapper("[ANSWER]\n", "[/ANSWER]")
    handler = make_output_handler(["answer_block", "rating"], {"answer_wrapper": wrapper})
    sample = handler("4.5\n", item(), "[/ANSWER]")  # the prompt ended with the opener
    assert sample.text == "4.5" and sample.raw == "4.5\n" and not sample.flags
    unclosed = handler("[ANSWER]\n4", item(), None)  # a nested opener, and no closing tag
    assert unclosed.text == "4.0" and "answer_format_miss" in unclosed.flags
    assert handler("\n", item(), "[/ANSWER]") is None


def test_answer_block_without_the_answers_module_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "inference_core.prompts.answers", None)
    with pytest.raises(ConfigError, match="answer_block needs inference_core.prompts.answers"):
        make_output_handler(["answer_block"], {})
