"""Task scorers (rating, choice), the scorer reaching metrics.json, and Japanese tokenization."""
from __future__ import annotations

import math

import orjson
import pytest

from conftest import compose
from inference_core import config as conf
from inference_core.evaluation.metrics import (ItemInput, bleu_tokenize, compute_metrics,
                                               distinct_n, rouge_l, sentence_bleu, tokens)
from inference_core.evaluation.scorers import scorer_names, task_metrics
from inference_core.evaluation.scoring import evaluate_run, summary_line
from inference_core.rundir.writers import SUMMARY_FILE

JA_HYP = "今日は映画を見に行きました"
JA_REF = "昨日は映画を見に行った"


def test_registered_scorers():
    assert scorer_names() == ["choice", "rating", "text"]
    with pytest.raises(ValueError, match="scorer 'bleu' is not known: choose one of choice"):
        task_metrics("bleu", [])


def test_text_scorer_adds_nothing_but_its_name():
    metrics = compute_metrics([ItemInput(("a b",), "a b")], "X", "en")
    assert metrics["scorer"] == "text" and not any(k.startswith(("rating_", "choice_"))
                                                   for k in metrics)


def test_rating_scores_mae_rmse_exact_and_counts_unreadable():
    items = [ItemInput(("4.0", "3.5", "no idea"), "4.0"),  # errors 0, -0.5; one unreadable
             ItemInput(("5.0",), "3.0"),                    # error +2
             ItemInput(("2.0",), None),                     # no reference: not scored
             ItemInput(("2.0",), "great film")]             # unreadable reference
    m = compute_metrics(items, "MovieLens", "zh", "rating")
    assert m["scorer"] == "rating"
    assert m["rating_scored_items"] == 2 and m["rating_scored_samples"] == 3
    assert m["rating_unreadable_samples"] == 1 and m["rating_unreadable_references"] == 1
    assert m["rating_mae"] == pytest.approx((0 + 0.5 + 2) / 3)
    assert m["rating_rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 4) / 3))
    assert m["rating_exact"] == pytest.approx(1 / 3)


def test_rating_reads_unhandled_free_text_too():
    m = task_metrics("rating", [ItemInput(("Rating: 4/5", "I'd give it 8/10"), "4.0")])
    assert m["rating_mae"] == 0 and m["rating_exact"] == 1


def test_rating_with_nothing_to_score_is_none_not_zero():
    m = task_metrics("rating", [ItemInput(("x",), None)])
    assert m["rating_mae"] is None and m["rating_rmse"] is None and m["rating_exact"] is None


def test_choice_accuracy_and_likert_distance():
    items = [ItemInput(("4", "2", "4"), "4"),          # Likert: hits 2/3, distances 0, 2, 0
             ItemInput(("B", "c"), "B"),                 # letters: no distance
             ItemInput(("楼下的猫。",), "楼下的猫")]      # free text: exact after trimming
    m = compute_metrics(items, "LovinkQuestionnaire", "zh", "choice")
    assert m["choice_scored_items"] == 3 and m["choice_scored_samples"] == 6
    assert m["choice_accuracy"] == pytest.approx(4 / 6)
    assert m["choice_ordered_samples"] == 3
    assert m["choice_mean_distance"] == pytest.approx(2 / 3)
    assert task_metrics("choice", [ItemInput(("B",), "A")])["choice_mean_distance"] is None


def test_japanese_is_tokenized_into_words():
    words = tokens(JA_HYP, "ja")
    assert words[:4] == ["今日", "は", "映画", "を"]
    assert tokens(JA_HYP, "en") == [JA_HYP]  # whitespace splitting sees one token
    assert bleu_tokenize("ja") == "none"
    assert distinct_n([JA_HYP], 1, "ja") == 1.0


def test_japanese_scores_differ_from_whitespace_splitting():
    assert sentence_bleu(JA_HYP, JA_REF, "en") == 0.0
    assert rouge_l(JA_HYP, JA_REF, "en") == 0.0
    assert sentence_bleu(JA_HYP, JA_REF, "ja") > 10
    assert rouge_l(JA_HYP, JA_REF, "ja") > 50
    m = compute_metrics([ItemInput((JA_HYP,), JA_REF)], "RealPersonaChat", "ja")
    assert m["language"] == "ja" and m["bleu_mean_of_n"] > 10 and m["bleu_corpus"] > 10


def test_config_takes_ja_and_checks_the_scorer_and_handlers():
    cfg = compose("dataset=RealPersonaChat")
    assert conf.dataset_language(cfg) == "ja"
    assert conf.dataset_scorer(cfg) == "text"
    assert conf.output_handlers(cfg) == (("script_ratio",), {"min_script_ratio": 0.3})
    assert conf.dataset_scorer(compose("dataset=MovieLens")) == "rating"
    assert conf.output_handlers(compose("dataset=Chameleons")) == ((), {})
    with pytest.raises(conf.ConfigError, match="dataset.scorer='stars': choose one of choice"):
        conf.dataset_scorer(compose("dataset=MovieLens", "dataset.scorer=stars"))
    with pytest.raises(conf.ConfigError, match="dataset.output_handler='nope'"):
        conf.output_handlers(compose("dataset=MovieLens", "dataset.output_handler=nope"))


def test_evaluate_run_takes_the_scorer_from_the_summary(tmp_path):
    run = tmp_path / "run"
    (run / "users").mkdir(parents=True)
    (run / SUMMARY_FILE).write_bytes(orjson.dumps(
        {"dataset": "MovieLens", "model_name": "m", "ablation_config": "history_only",
         "language": "zh", "scorer": "rating"}))
    (run / "users" / "u.json").write_bytes(orjson.dumps({
        "user_hash": "u", "dataset": "MovieLens", "items": [
            {"location": {"record": 0, "collection": 0, "item": 0}, "prompt_tokens": 5,
             "generated_samples": ["4.0", "3.0"], "finish_reasons": ["stop", "stop"],
             "output_tokens": [2, 2], "reference": "4.0"}]}))
    metrics = evaluate_run(run)
    assert metrics["scorer"] == "rating" and metrics["rating_mae"] == 0.5
    assert orjson.loads((run / "metrics.json").read_bytes())["rating_exact"] == 0.5
    assert "rating_mae=0.500" in summary_line(run, metrics)
