"""Prompts built by worker processes: the same prompts as in the run's process, in input order."""
from __future__ import annotations

from dataclasses import replace

import pytest
from jinja2.exceptions import UndefinedError

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


@pytest.mark.slow
def test_workers_build_what_the_run_process_builds_in_input_order(tokenizer):
    users = load_dataset("DMSC", REPO / "data" / "DMSC").users
    # Both builders, users interleaved: the order out is the order in, whichever worker finishes.
    entries = [(i % 2, u) for u in users for i in (0, 1)] * 3
    with PromptPool(builders(tokenizer), workers=1) as here:
        want = list(here.build(entries))
    with PromptPool(builders(tokenizer), workers=2, users_per_task=3) as pool:
        got = list(pool.build(iter(entries)))
    assert [(b.index, b.user.user_hash) for b in got] == [(i, u.user_hash) for i, u in entries]
    assert [(b.prompts, [x.text for x in b.prompts], [x.messages for x in b.prompts], b.unfit)
            for b in got] == [
        (b.prompts, [x.text for x in b.prompts], [x.messages for x in b.prompts], b.unfit)
        for b in want]
    assert any(b.unfit for b in got) and all(b.prompts or b.unfit for b in got)
    assert not any(b.error for b in got)


@pytest.mark.slow
def test_a_users_build_error_comes_back_from_a_worker_for_that_user_alone(tokenizer):
    users = load_dataset("DMSC", REPO / "data" / "DMSC").users
    broken = builders(tokenizer)
    broken[1].settings = replace(broken[1].settings, system="{{ nothing.at_all }}")
    entries = [(i, u) for u in users[:3] for i in (0, 1)]
    with PromptPool(broken, workers=2, users_per_task=2) as pool:
        got = list(pool.build(iter(entries)))
    assert [b.error is None for b in got] == [True, False] * 3
    assert all(isinstance(b.error, UndefinedError) and "nothing" in str(b.error)
               for b in got if b.index == 1)
    assert all(b.prompts or b.unfit for b in got if b.index == 0)


def test_a_builder_without_a_tokenizer_folder_cannot_go_to_workers(tokenizer):
    b = builders(tokenizer)[0]
    assert BuilderSpec.of(b).make(tokenizer).settings == b.settings
    b.tokenizer = type("Remote", (), {"name_or_path": "org/some-model"})()
    with pytest.raises(ValueError, match="org/some-model"):
        BuilderSpec.of(b)
