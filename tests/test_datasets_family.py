"""The benchmark family: every dataset's YAML, sample data, presets and experiments, and one
engine test that runs the six new datasets end to end on the shared vLLM engine."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from conftest import DATA, REPO, compose
from inference_core import config as conf
from inference_core.data.loader import load_dataset
from inference_core.engine import SamplingSettings
from inference_core.prompts.builder import PromptBuilder, build_prompts
from inference_core.run.job import prepare_job

NEW = ("LovinkDialogue", "LovinkQuestionnaire", "MovieLens", "PERSONA_Bench", "REALTALK",
       "RealPersonaChat")
ALL = ("Chameleons", "DMSC") + NEW
ABLATIONS = conf.group_choices("ablation")
# dataset -> (sampling preset, trained ablation, max_model_len, language, scorer)
FAMILY = {
    "Chameleons": ("chameleons", "context_only", 1024, "en", "text"),
    "DMSC": ("dmsc", "profile_and_history", 2048, "zh", "text"),
    "LovinkDialogue": ("lovink_dialogue", "profile_and_context", 16384, "zh", "text"),
    "LovinkQuestionnaire": ("lovink_questionnaire", "history_only", 2048, "zh", "choice"),
    "MovieLens": ("movielens", "history_only", 2048, "zh", "rating"),
    "PERSONA_Bench": ("persona_bench", "history_and_context", 2048, "en", "text"),
    "REALTALK": ("realtalk", "context_only", 16384, "en", "text"),
    "RealPersonaChat": ("realpersonachat", "profile_and_context", 1024, "ja", "text"),
}


def raw(name: str, file: str = "test_leaderboard.json") -> list:
    return orjson.loads((DATA / name / file).read_bytes())


def test_every_dataset_is_a_group_choice_with_data():
    assert set(ALL) <= set(conf.group_choices("dataset"))
    for name in ALL:
        assert (DATA / name / "train.json").is_file() and (DATA / name / "test_leaderboard.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_new_yaml_settings(name):
    d = compose(f"dataset={name}").dataset
    preset, _, _, language, scorer = FAMILY[name]
    assert d.name == name and d.language == language and d.scorer == scorer
    assert d.sampling_preset == preset and d.stop
    assert d.target_speaker in (None, "profile_name", "user_or_profile_name")
    assert d.history_max_items > 0 and d.history_max_chars > 0
    conf.output_handlers(compose(f"dataset={name}"))  # names and options are valid


@pytest.mark.parametrize("name", NEW)
def test_sample_data_has_5_to_10_users_with_references(name):
    train, test = raw(name, "train.json"), raw(name)
    assert 5 <= len(test) <= 10 and {r["user_hash"] for r in test} <= {r["user_hash"] for r in train}
    items = [i for r in test for c in r["task"]["task_behavior_collections"] for i in c["data"]]
    assert items and all(isinstance(i.get("continuation"), str) for i in items)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_loads_and_builds_prompts_for_every_ablation(name, tokenizer):
    dataset = load_dataset(name, DATA / name)
    assert dataset.users and not dataset.skipped
    for ablation in ABLATIONS:
        cfg = compose(f"dataset={name}", f"ablation={ablation}")
        builder = PromptBuilder(tokenizer, conf.prompt_settings(cfg), conf.ablation(cfg), 2048 - 32)
        prompts, unfit = build_prompts(builder, dataset.users)
        assert not unfit and len(prompts) == sum(len(u.items) for u in dataset.users)
        assert all(0 < p.num_tokens <= 2048 - 32 for p in prompts)


def test_awkward_cases_are_in_the_samples(tokenizer):
    lovink = load_dataset("LovinkDialogue", DATA / "LovinkDialogue")
    assert any(t.source == u.name for u in lovink.users for i in u.items for t in i.context)
    assert any(t.source == "user" for u in lovink.users for i in u.items for t in i.context)
    questions = [i.context[-1].content for u in load_dataset(
        "LovinkQuestionnaire", DATA / "LovinkQuestionnaire").users for i in u.items]
    from inference_core.outputs.choice import parse_options
    kinds = {None if o is None else o.ordered for o in map(parse_options, questions)}
    assert kinds == {None, True, False}  # open, Likert and multiple choice questions
    rpc = raw("RealPersonaChat")[0]["user"]
    assert "\n" in rpc["profile"]["life_experience"]
    assert set(rpc["personality"]["structured"]) == {"big_five", "ios"}
    movielens = load_dataset("MovieLens", DATA / "MovieLens")
    cfg = compose("dataset=MovieLens", "ablation=history_only")
    builder = PromptBuilder(tokenizer, conf.prompt_settings(cfg), conf.ablation(cfg), 2048 - 32)
    prompts, _ = build_prompts(builder, movielens.users)
    assert any(p.dropped_history for p in prompts)  # the long history is cut at 2048
    assert all(i.reference.count(".") == 1 for u in movielens.users for i in u.items)


@pytest.mark.parametrize("name", ALL)
def test_sampling_preset(name):
    preset = FAMILY[name][0]
    assert preset in conf.group_choices("sampling")
    settings = conf.sampling_settings(compose(f"dataset={name}", f"sampling={preset}"))
    assert settings.repetition_penalty >= 1.1 and settings.num_samples == 5


@pytest.mark.parametrize("name", ALL)
def test_experiment_file(name):
    preset, ablation, max_len, _, _ = FAMILY[name]
    path = REPO / "conf" / "experiment" / f"{preset}_8b.yaml"
    text = yaml.safe_load(path.read_text())
    defaults = {k: v for d in text["defaults"] for k, v in d.items()}
    assert defaults == {"override /dataset": name, "override /ablation": ablation,
                        "override /model": "finetuned_8b", "override /sampling": preset,
                        "override /prompt": "tagged"}
    assert text["model"] == {"max_model_len": max_len} and "engine" not in text
    if not (REPO / "conf" / "prompt" / "tagged.yaml").is_file():
        pytest.skip("conf/prompt (the prompts branch) is not here yet: composed after the merge")
    cfg = compose(f"experiment={preset}_8b", "model.path=/ckpt/x")
    assert cfg.dataset.name == name and cfg.model.max_model_len == max_len


@pytest.mark.slow
def test_repetition_penalty_reaches_both_engines(tokenizer):
    settings = SamplingSettings(2, 0.7, 0.9, 50, 16, 42, repetition_penalty=1.15)
    from inference_hf.engine import generate_kwargs
    assert generate_kwargs(settings, 2, tokenizer, 0)["repetition_penalty"] == 1.15
    from inference_vllm.engine import sampling_params
    assert sampling_params(settings, 2).repetition_penalty == 1.15
    assert conf.sampling_settings(compose()).repetition_penalty == 1.0
    assert conf.sampling_settings(compose("sampling=greedy")).repetition_penalty == 1.0


@pytest.mark.engine
def test_every_new_dataset_end_to_end(vllm_engine, tmp_path):
    from inference_core.run.pipeline import run_jobs

    jobs = [prepare_job(compose(
        f"dataset={name}", f"ablation={FAMILY[name][1]}", f"sampling={FAMILY[name][0]}",
        "sampling.num_samples=2", "sampling.max_tokens=8", "max_users=2", "allow_skips=true",
        "report=false", f"output_dir={tmp_path / name}")) for name in NEW]
    run_jobs(jobs, lambda job, adapters: vllm_engine)
    for name in NEW:
        out = tmp_path / name
        summary = orjson.loads((out / "inference_summary.json").read_bytes())
        assert summary["dataset"] == name and summary["language"] == FAMILY[name][3]
        assert summary["scorer"] == FAMILY[name][4]
        assert summary["sampling_params"]["repetition_penalty"] >= 1.1
        filled = orjson.loads((out / "test_leaderboard.json").read_bytes())[:2]
        for record in filled:
            for c in record["task"]["task_behavior_collections"]:
                for item in c["data"]:
                    assert len(item.get("continuations", ())) == 2 or summary["skipped_items"]
        metrics = orjson.loads((out / "metrics.json").read_bytes())
        # The tiny model rarely writes a rating or an option label: the handlers redraw, then
        # skip such items (never a placeholder), so a run may score none of its two users.
        assert metrics["scorer"] == FAMILY[name][4]
        assert metrics["num_scored_items"] >= 1 or summary["skipped_items"]
        if name == "MovieLens":
            assert "rating_mae" in metrics
        if name == "LovinkQuestionnaire":
            assert "choice_accuracy" in metrics
