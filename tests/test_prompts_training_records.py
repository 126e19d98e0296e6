"""Issue 37 item 12: profile DIM tags and speaker roles as the training loader wrote them
(reference/TRAINING_FORMATS.md §3), on exactly the records the issue names, read from real
benchmark files through the loader. Golden strings typed by hand."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import compose
from inference_core.config import ablation as ablation_of, prompt_settings
from inference_core.data.loader import load_dataset
from inference_core.data.records import UserRecord
from inference_core.prompts.builder import PromptBuilder
from test_prompts_formats import builder, only_text

# The issue's personality: flat (a key holds "."), so every key but the null one is a DIM tag.
STRUCTURED = {"Ocean.Extraversion": 90, "mbti": "ENTJ", "x.y": None}
DIM_LINES = "[DIM_OCEAN_EXTRAVERSION=90]\n[DIM_MBTI=ENTJ]\n"
CHATML_OPEN = "<|im_start|>system\n"
CHATML_ANSWER = "<|im_end|><|im_start|>assistant\n[ANSWER]\n"
LOVINK_TAIL = ("\n\n\n预测下一条回复：\n\n注意：请直接给出下一条回复，用 [ANSWER] 和 [/ANSWER] "
               "标签包裹答案内容，不需要解释或思考过程。")
RPC_TASK = ("RealPersonaChatデータセットにおけるユーザーの過去の会話データに基づき、"
            "当該ユーザーの会話行動パターンをシミュレートする：")
RPC_TAIL = ("\n\n\nユーザーの次のメッセージを予測する：\n\n\n\n注意：思考過程や説明は不要です。"
            "ユーザーの次のメッセージのみを [ANSWER] と [/ANSWER] の間で出力してください。")


def record(user_hash: str, name: str, sources: tuple[str, str, str],
           structured: Any = STRUCTURED) -> dict[str, Any]:
    """One test record: a three-turn dialogue whose middle turn is the user's (by `sources`)."""
    turns = [{"source": s, "content": c} for s, c in zip(sources, ("hi there", "hey", "busy?"))]
    return {"user_hash": user_hash,
            "user": {"profile": {"name": name}, "personality": {"structured": structured}},
            "task": {"description": "chat", "task_behavior_collections": [
                {"type": "dialogue", "type_desc": "chat",
                 "data": [{"context": turns, "continuation": "a bit"}]}]}}


# The user YS whose own turn's source is "YS " (a trailing space), and the user " YS " whose own
# turn's source is "YS": training strips both sides before comparing, so both are the user's.
RECORDS = [record("u-trail", "YS", ("Bot", "YS ", "Bot")),
           record("u-name", " YS ", ("Bot", "YS", "Bot"))]


def users_from_files(tmp_path: Path, records: list[Any] | bytes) -> dict[str, UserRecord]:
    """The users as the loader reads them from a real benchmark folder."""
    (tmp_path / "train.json").write_bytes(b"[]")
    test = records if isinstance(records, bytes) else orjson.dumps(records)
    (tmp_path / "test_leaderboard.json").write_bytes(test)
    return {u.user_hash: u for u in load_dataset("issue37", tmp_path).users}


def profile_block(name: str) -> str:
    return f"[USER_PROFILE]\n[USER_NAME={name}]\n{DIM_LINES}\n"


DIALOGUE = "[RECENT_DIALOGUE]\nUser: hi there\nAssistant: hey\nUser: busy?"


# The trained task and tail of each dataset, around the sections (TRAINING_FORMATS.md §4).
TASK_AND_TAIL = {"LovinkDialogue": ("基于用户在 Lovink 对话中的历史数据，模拟该用户的对话行为模式",
                                    LOVINK_TAIL),
                 "RealPersonaChat": (RPC_TASK, RPC_TAIL)}


@pytest.mark.parametrize("dataset", sorted(TASK_AND_TAIL))
@pytest.mark.parametrize("user_hash, name", [("u-trail", "YS"), ("u-name", " YS ")])
def test_tagged_writes_training_dims_and_roles(tokenizer, tmp_path, dataset, user_hash, name):
    user = users_from_files(tmp_path, RECORDS)[user_hash]
    task, tail = TASK_AND_TAIL[dataset]
    b = builder(tokenizer, dataset, "profile_and_context", "tagged")
    assert only_text(b, user) == (
        CHATML_OPEN + f"[USER_HASH={user_hash}]\n\n" + profile_block(name) + "[TASK]\n" + task
        + "\n\n" + DIALOGUE + tail + CHATML_ANSWER)


@pytest.mark.parametrize("fmt", ["tagged_era_a", "tagged_era_b"])
@pytest.mark.parametrize("dataset", ["LovinkDialogue", "RealPersonaChat", "Chameleons",
                                     "PERSONA_Bench", "REALTALK"])
@pytest.mark.slow
def test_every_tagged_era_and_dialogue_dataset_uses_the_same_rules(tokenizer, tmp_path,
                                                                   dataset, fmt):
    users = users_from_files(tmp_path, RECORDS)
    b = builder(tokenizer, dataset, "profile_and_context", fmt)
    for user_hash, name in (("u-trail", "YS"), ("u-name", " YS ")):
        text = only_text(b, users[user_hash])
        assert profile_block(name) in text and "\n\n" + DIALOGUE + "\n\n" in text
        assert "[DIM_X_Y" not in text


def test_native_turns_know_the_users_own_line_by_the_same_rule(tokenizer, tmp_path):
    """The native format writes turns as their source wrote them; a context_line of one's own
    that asks whose turn it is gets the training answer."""
    cfg = compose("dataset=LovinkDialogue", "ablation=context_only", "prompt=native")
    settings = dataclasses.replace(prompt_settings(cfg),
                                   context_line="{{ 'me' if turn.own else turn.source }}: "
                                                "{{ turn.content }}")
    users = users_from_files(tmp_path, RECORDS)
    for user_hash in ("u-trail", "u-name"):
        native = builder(tokenizer, "LovinkDialogue", "context_only", "native")
        assert "Conversation so far:\nBot: hi there\n" in only_text(native, users[user_hash])
        own = PromptBuilder(tokenizer, settings, ablation_of(cfg), 1536, keep_text=True)
        assert "Conversation so far:\nBot: hi there\nme: hey\nBot: busy?" in only_text(
            own, users[user_hash])


def test_source_user_in_any_case_with_spaces_is_the_users_own_turn(tokenizer, tmp_path):
    user = users_from_files(tmp_path, [record("u-case", "YS", ("Bot", " User ", "YS"))])["u-case"]
    b = builder(tokenizer, "LovinkDialogue", "context_only", "tagged")
    assert ("[RECENT_DIALOGUE]\nUser: hi there\nAssistant: hey\nAssistant: busy?"
            in only_text(b, user))


def test_a_blank_name_owns_no_turn(tokenizer, tmp_path):
    # The reference is silent on a blank name; ours matches no turn, not every blank source.
    user = users_from_files(tmp_path, [record("u-blank", "  ", ("", " ", "Bot"))])["u-blank"]
    b = builder(tokenizer, "LovinkDialogue", "context_only", "tagged")
    assert "[RECENT_DIALOGUE]\nUser: hi there\nUser: hey\nUser: busy?" in only_text(b, user)


# Values as the JSON file writes them; training wrote str() of what json.load made of them.
FLAT_VALUES = (b'{"a.b": 90.0, "c": 1e2, "d": 90.50, "e": true, "f": {"g": 1.10, "h": [1, "x"]},'
               b' "i": null, "j": "", "k": 0, "l": [], "m": -0.0}')


def test_flat_dims_write_each_value_as_python_str_of_the_json_value(tokenizer, tmp_path):
    raw = orjson.dumps([record("u-vals", "YS", ("Bot", "YS", "Bot"), structured="@")])
    user = users_from_files(tmp_path, raw.replace(b'"@"', FLAT_VALUES))["u-vals"]
    b = builder(tokenizer, "LovinkDialogue", "profile_only", "tagged")
    assert ("[USER_PROFILE]\n[USER_NAME=YS]\n[DIM_A_B=90.0]\n[DIM_C=100.0]\n[DIM_D=90.5]\n"
            "[DIM_E=True]\n[DIM_F={'g': 1.1, 'h': [1, 'x']}]\n[DIM_J=]\n[DIM_K=0]\n[DIM_L=[]]\n"
            "[DIM_M=-0.0]\n\n[TASK]\n") in only_text(b, user)


def test_nested_dims_only_when_no_key_holds_a_dot(tokenizer, tmp_path):
    nested = {"ocean": {"dimensions": {"openness": {"score": 4.0}, "bad": 3}}, "mbti": "ENTJ",
              "ios": 3}
    user = users_from_files(tmp_path, [record("u-nest", "YS", ("Bot", "YS", "Bot"),
                                              structured=nested)])["u-nest"]
    b = builder(tokenizer, "LovinkDialogue", "profile_only", "tagged")
    assert ("[USER_PROFILE]\n[USER_NAME=YS]\n[DIM_OCEAN_OPENNESS=4.0]\n\n[TASK]\n"
            in only_text(b, user))
