"""Prompts built by worker processes: the same prompts as in the run's process, in input order."""
from __future__ import annotations

import pytest

from conftest import REPO, compose
from inference_core.config import prompt_settings
from inference_core.data.loader import load_dataset
from inference_core.prompts.builder import Ablation, PromptBuilder
from inference_core.prompts.pool import BuilderSpec, PromptPool
from prompt_cases import ABLATIONS


def builders(tokenizer) -> list[PromptBuilder]:
    native = prompt_settings(compose("dataset=DMSC"))
    tagged = prompt_settings(compose("dataset=DMSC", "prompt=tagged"))
    return [PromptBuilder(tokenizer, native, Ablation("all", *ABLATIONS["profile_and_history"]),
                          300, keep_text=True),
            PromptBuilder(tokenizer, tagged, Ablation("h", *ABLATIONS["history_only"]), 1536,
                          keep_text=True, keep_messages=True)]


def test_workers_build_what_the_run_process_builds_in_input_order(tokenizer):
    users = load_dataset("DMSC", REPO / "data" / "DMSC").users
    # Both builders, users interleaved: the order out is the order in, whichever worker finishes.
    entries = [(i % 2, u) for u in users for i in (0, 1)] * 3
    with PromptPool(builders(tokenizer), workers=1) as here:
        want = list(here.build(entries))
    with PromptPool(builders(tokenizer), workers=2, users_per_task=3) as pool:
        got = list(pool.build(iter(entries)))
    assert [(i, u.user_hash) for i, u, _, _ in got] == [(i, u.user_hash) for i, u in entries]
    assert [(p, [x.text for x in p], [x.messages for x in p], unfit) for _, _, p, unfit in got] == [
        (p, [x.text for x in p], [x.messages for x in p], unfit) for _, _, p, unfit in want]
    assert any(unfit for *_, unfit in got) and all(p or unfit for *_, p, unfit in got)


def test_a_builder_without_a_tokenizer_folder_cannot_go_to_workers(tokenizer):
    b = builders(tokenizer)[0]
    assert BuilderSpec.of(b).make(tokenizer).settings == b.settings
    b.tokenizer = type("Remote", (), {"name_or_path": "org/some-model"})()
    with pytest.raises(ValueError, match="org/some-model"):
        BuilderSpec.of(b)
