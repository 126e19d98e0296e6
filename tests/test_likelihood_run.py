"""mode=likelihood and mode=both through the pipeline (the fake engine, tests only, stands in for
the model): what is scored for each item, in the checkpoint's training format, with the real
embedded tokenizer; resume; refits; items without references. Engine agreement is in
test_likelihood_engines.py, the outputs in test_likelihood_outputs.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, compose, dialogue_item, user_record, write_dataset
from fake_engine import FakeEngine, lend
from inference_core.cli import run_outcome
from inference_core.data.loader import load_dataset
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job
from inference_core.run.signals import Interrupted
from test_vllm_pipeline import load

QUICK = ["evaluate=false", "report=false", "sampling.num_samples=2", "sampling.max_tokens=8"]
DMSC_TAGGED = ["dataset=DMSC", "prompt=tagged", "dataset.holdout=last"]


def run(tmp_path: Path, *overrides: str, engine: FakeEngine | None = None) -> tuple[Path, Any]:
    engine = engine or FakeEngine()
    job = prepare_job(compose(f"output_dir={tmp_path / 'out'}", *QUICK, *overrides))
    return run_job(job, lend(engine)), engine


def items(out: Path) -> dict[tuple[Any, str], dict[str, Any]]:
    return {(u["user_hash"], "{record}/{collection}/{item}".format(**i["location"])): i
            for u in map(load, (out / "users").glob("*.json")) for i in u["items"]}


def references(dataset: str, folder: Path) -> dict[str, str]:
    held = load_dataset(dataset, folder, holdout="last")
    return {str(u.user_hash): i.reference for u in held.users for i in u.items}


def test_the_scored_tokens_are_the_trained_target_after_the_generation_prompt(
        tmp_path: Path, tokenizer: Any) -> None:
    out, engine = run(tmp_path, *DMSC_TAGGED, "mode=likelihood")
    _, generating = run(tmp_path / "gen", *DMSC_TAGGED)
    gold = references("DMSC", DATA / "DMSC")
    assert len(engine.scored) == len(gold) and not engine.requests
    by_item = {r.request_id.split("/")[1].split(".")[0]: r for r in engine.scored}
    for scored, generated in zip(by_item.values(), generating.requests):
        target = tokenizer.decode(scored.token_ids[scored.target_start:])
        assert target.startswith("[ANSWER]\n") and target.endswith("\n[/ANSWER]<|im_end|>")
        # The context is the generation prompt as sent, without the opener it ends with.
        context = list(scored.token_ids[:scored.target_start])
        assert list(generated.token_ids[:len(context)]) == context
        assert tokenizer.decode(generated.token_ids[len(context):]) == "[ANSWER]\n"
        assert target[len("[ANSWER]\n"):-len("\n[/ANSWER]<|im_end|>")] in gold.values()
    for item in items(out).values():
        figures = item["likelihood"]
        assert item["generated_samples"] == [] and figures["scored"] is True
        assert figures["target_tokens"] > figures["body_tokens"] > 0
        assert figures["nll_per_token"] == pytest.approx(-figures["logprob"]
                                                         / figures["target_tokens"])
    summary = load(out / "inference_summary.json")
    assert summary["engine"] == "fake" and summary["skipped_items"] == []


def test_the_native_format_scores_the_reference_and_the_templates_end_of_turn(
        tmp_path: Path, tokenizer: Any) -> None:
    """The Chameleons test file carries `continuation`: it is what is scored, no holdout."""
    _, engine = run(tmp_path, "mode=likelihood")
    expected = {i.reference.strip() + "<|im_end|>" for u in load_dataset(
        "Chameleons", DATA / "Chameleons").users for i in u.items if i.reference}
    got = {tokenizer.decode(r.token_ids[r.target_start:]) for r in engine.scored}
    assert got == expected


def test_both_share_one_engine_call_and_every_item_has_samples_and_figures(
        tmp_path: Path) -> None:
    out, engine = run(tmp_path, *DMSC_TAGGED, "mode=both")
    assert engine.calls == 2  # one stream: scoring first, then the held generation requests
    assert len(engine.requests) == len(engine.scored) > 0
    for item in items(out).values():
        assert len(item["generated_samples"]) == 2 and item["likelihood"]["scored"]


@pytest.mark.slow
def test_a_killed_likelihood_run_resumes_to_what_an_uninterrupted_one_wrote(
        tmp_path: Path) -> None:
    whole, _ = run(tmp_path / "whole", *DMSC_TAGGED, "mode=likelihood")
    with pytest.raises(Interrupted):
        run(tmp_path / "cut", *DMSC_TAGGED, "mode=likelihood",
            engine=FakeEngine(interrupt_after=3))
    cut = tmp_path / "cut" / "out"
    kept = len(list((cut / "users").glob("*.json")))
    assert 0 < kept < len(list((whole / "users").glob("*.json")))
    again, engine = run(tmp_path / "cut", *DMSC_TAGGED, "mode=likelihood")
    assert len(engine.scored) == len(items(whole)) - kept
    assert items(again) == items(whole)


def test_items_without_a_reference_are_named_unscored_and_none_at_all_exits_2(
        tmp_path: Path) -> None:
    history = [dialogue_item(f"line {i}", ("R", "q")) for i in range(3)]
    train = [user_record("u1", "DANTE", history), user_record("u2", "DANTE", history)]
    test = [user_record("u1", "DANTE", [dialogue_item("a real answer", ("R", "say?")),
                                        dialogue_item(None, ("R", "and?"))]),
            user_record("u2", "DANTE", [dialogue_item(None, ("R", "what?"))])]
    folder = write_dataset(tmp_path / "Mixed", train, test)
    out, engine = run(tmp_path, "dataset=custom", f"dataset.path={folder}", "mode=likelihood")
    figures = {k: i["likelihood"] for k, i in items(out).items()}
    assert len(engine.scored) == 1 and sum(f["scored"] for f in figures.values()) == 1
    assert all("dataset.holdout=last" in f["why"] for f in figures.values() if not f["scored"])

    bare = write_dataset(tmp_path / "Bare", train,
                         [user_record("u1", "DANTE", [dialogue_item(None, ("R", "q"))])])
    code, reason = run_outcome(compose(f"output_dir={tmp_path / 'bare'}", *QUICK, "dataset=custom",
                                       f"dataset.path={bare}", "mode=likelihood"),
                               lend(FakeEngine()))
    assert code == 2 and "dataset.holdout=last" in reason and "\n" not in reason


def test_a_long_target_cuts_the_context_never_the_target(tmp_path: Path, tokenizer: Any) -> None:
    long_answer = " ".join(["word"] * 150)
    history = [dialogue_item(f"past line {i} " + "words " * 20, ("R", "q")) for i in range(30)]
    train = [user_record("u1", "DANTE", history)]
    test = [user_record("u1", "DANTE", [dialogue_item(long_answer, ("R", "go on")),
                                        dialogue_item("x " * 400, ("R", "and?"))])]
    folder = write_dataset(tmp_path / "Long", train, test)
    out, engine = run(tmp_path, "dataset=custom", f"dataset.path={folder}", "mode=likelihood",
                      "model.max_model_len=400", "sampling.max_tokens=16")
    [scored] = engine.scored
    assert len(scored.token_ids) <= 400
    assert tokenizer.decode(scored.token_ids[scored.target_start:]) == long_answer + "<|im_end|>"
    figures = sorted((i["likelihood"] for i in items(out).values()), key=lambda f: f["scored"])
    assert not figures[0]["scored"] and "does not fit max_model_len=400" in figures[0]["why"]
    assert figures[1]["scored"] and figures[1]["context_tokens"] + figures[1]["target_tokens"] <= 400


@pytest.mark.parametrize("dataset", ["MovieLens", "LovinkQuestionnaire"])
def test_answer_sets_score_every_option(tmp_path: Path, dataset: str) -> None:
    out, engine = run(tmp_path, f"dataset={dataset}", "prompt=tagged", "dataset.holdout=last",
                      "mode=likelihood")
    predicted = [i["likelihood"] for i in items(out).values() if "options" in i["likelihood"]]
    assert predicted and all(f["predicted"] in {o["option"] for o in f["options"]}
                             for f in predicted)
    if dataset == "MovieLens":  # "4.0" is several tokens: one whole target per option
        assert all(len(f["options"]) == 10 and f["correct"] is not None for f in predicted)
        assert len(engine.scored) == sum(len(f["options"]) for f in predicted)
    else:  # one token each ("1".."5", "A".."D"): read at the answer slot, one request per item
        slots = [r for r in engine.scored if r.next_token_ids]
        assert len(slots) == len(predicted)
        assert sorted(len(r.next_token_ids) for r in slots) == sorted(
            len(f["options"]) for f in predicted)
        assert len(engine.scored) <= 2 * len(items(out))


def test_a_dry_run_writes_the_scored_texts(tmp_path: Path) -> None:
    job = prepare_job(compose(f"output_dir={tmp_path / 'dry'}", *DMSC_TAGGED, "mode=likelihood",
                              "dry_run=true"))
    path = run_job(job, lambda job, adapters: pytest.fail("an engine was started"))
    lines = [load_line(line) for line in path.read_bytes().splitlines()]
    assert all(line["targets"][0]["text"].endswith("[/ANSWER]<|im_end|>") for line in lines)
    assert all(line["text"] == line["scored_prompt"] + "[ANSWER]\n" for line in lines)


def load_line(line: bytes) -> dict[str, Any]:
    import orjson

    return orjson.loads(line)
