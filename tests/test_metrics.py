"""Quality metrics against small cases computed by hand."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from inference_core.evaluation.metrics import (
    CharTokenizer,
    ItemInput,
    bleu_tokenize,
    compute_metrics,
    distinct_n,
    language_for_dataset,
    rouge_l,
    score_item,
    sentence_bleu,
    sentence_chrf,
)


def test_language_and_bleu_tokenizer_follow_dataset() -> None:
    assert language_for_dataset("DMSC") == "zh"
    assert language_for_dataset("dmsc") == "zh"
    assert language_for_dataset("Chameleons") == "en"
    assert language_for_dataset(None) == "en"
    assert bleu_tokenize("zh") == "zh"
    assert bleu_tokenize("en") == "13a"


def test_distinct_n_words_by_hand() -> None:
    # unigrams a,b,a | a,b -> 2 unique of 5; bigrams (a b),(b a) | (a b) -> 2 unique of 3
    assert distinct_n(["a b a", "a b"], 1, "en") == pytest.approx(2 / 5)
    assert distinct_n(["a b a", "a b"], 2, "en") == pytest.approx(2 / 3)


def test_distinct_n_chinese_characters_by_hand() -> None:
    # characters are tokens and spaces are ignored: 我爱我 | 我爱 -> same counts as above
    assert distinct_n(["我爱我", "我 爱"], 1, "zh") == pytest.approx(2 / 5)
    assert distinct_n(["我爱我", "我 爱"], 2, "zh") == pytest.approx(2 / 3)
    # the same text as one whitespace "word" would be a single unigram
    assert distinct_n(["我爱我"], 1, "en") == 1.0


def test_distinct_n_without_ngrams_is_none() -> None:
    assert distinct_n(["", "x"], 2, "en") is None
    assert distinct_n([], 1, "zh") is None


def test_rouge_l_chinese_lcs_by_hand() -> None:
    # LCS(今天天气很好, 今天天气不错啊) = 今天天气 = 4; P = 4/6, R = 4/7, F = 2PR/(P+R) = 8/13
    assert rouge_l("今天天气很好！", "今天天气不错啊。", "zh") == pytest.approx(100 * 8 / 13)
    # LCS(我爱北京天安门, 我爱上海天安门) = 我爱天安门 = 5 of 7 on both sides
    assert rouge_l("我爱北京天安门", "我爱上海天安门", "zh") == pytest.approx(100 * 5 / 7)


def test_default_rouge_tokenizer_would_drop_chinese() -> None:
    # Why CharTokenizer exists: rouge-score's default keeps only [a-z0-9].
    default = rouge_scorer.RougeScorer(["rougeL"])
    assert default.score("我爱北京", "我爱北京")["rougeL"].fmeasure == 0.0
    assert CharTokenizer().tokenize("我爱 A，京。") == ["我", "爱", "a", "京"]


def test_rouge_l_english_by_hand() -> None:
    # LCS(the cat sat on the mat, the cat lay on a mat) = the cat on mat = 4 of 6 each side
    assert rouge_l("the cat lay on a mat", "the cat sat on the mat", "en") == pytest.approx(
        100 * 4 / 6
    )


def test_bleu_exact_match_is_100() -> None:
    text = "the cat sat on the mat"
    assert sentence_bleu(text, text, "en") == pytest.approx(100)
    assert sentence_bleu("这部电影非常好看", "这部电影非常好看", "zh") == pytest.approx(100)


def test_chinese_bleu_needs_zh_tokenizer() -> None:
    hyp, ref = "这部电影很好看", "这部电影非常好看"
    # 13a sees one token per sentence and no overlap; zh splits characters
    assert sentence_bleu(hyp, ref, "en") == pytest.approx(0.0)
    assert sentence_bleu(hyp, ref, "zh") > 10


def test_chrf_identity_is_100() -> None:
    assert sentence_chrf("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100)
    assert sentence_chrf("今天天气很好", "今天天气很好") == pytest.approx(100)


def test_best_and_mean_of_n() -> None:
    scores = score_item(ItemInput(("the cat sat", "a dog ran"), "the cat sat"), "en")
    assert scores.best is not None and scores.mean is not None
    assert scores.best["rouge_l"] == pytest.approx(100)
    assert scores.mean["rouge_l"] == pytest.approx(50)  # (100 + 0) / 2
    assert scores.best["bleu"] == pytest.approx(100)
    assert scores.best["chrf"] == pytest.approx(100)
    assert scores.mean["chrf"] < 100


def test_compute_metrics_mixes_referenced_and_unreferenced_items() -> None:
    ref = "the cat sat on the mat"
    items = [
        ItemInput((ref, "a dog ran"), ref),
        ItemInput(("a b a", "a b")),  # no reference: counts for distinct and length only
    ]
    m = compute_metrics(items, "Chameleons")
    assert m["num_items"] == 2
    assert m["num_scored_items"] == 1
    assert m["num_samples"] == 4
    assert m["rouge_l_best_of_n"] == pytest.approx(100)
    assert m["rouge_l_mean_of_n"] == pytest.approx(50)  # (100 + 0) / 2
    # corpus scores use the first sample only, which matches exactly
    assert m["bleu_corpus"] == pytest.approx(100)
    assert m["chrf_corpus"] == pytest.approx(100)
    # item 1: 8 distinct of 9 unigrams ("the" twice), 7 of 7 bigrams; item 2: 2/5 and 2/3
    assert m["distinct_1"] == pytest.approx((8 / 9 + 2 / 5) / 2)
    assert m["distinct_2"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mean_chars"] == pytest.approx((22 + 9 + 5 + 3) / 4)


def test_compute_metrics_without_references_has_null_reference_metrics() -> None:
    m = compute_metrics([ItemInput(("我爱我", "我爱"))], "DMSC")
    assert m["language"] == "zh" and m["bleu_tokenize"] == "zh"
    assert m["num_scored_items"] == 0
    for key in ("bleu_corpus", "chrf_corpus", "bleu_mean_of_n", "bleu_best_of_n",
                "chrf_mean_of_n", "chrf_best_of_n", "rouge_l_mean_of_n", "rouge_l_best_of_n"):
        assert m[key] is None
    assert m["distinct_1"] == pytest.approx(2 / 5)
    assert m["mean_chars"] == pytest.approx(2.5)


def test_compute_metrics_on_nothing() -> None:
    m = compute_metrics([ItemInput(())], "DMSC")
    assert m["num_items"] == 0 and m["num_samples"] == 0
    assert m["distinct_1"] is None and m["mean_chars"] is None


def test_dataset_language_setting_wins_over_the_name():
    from conftest import compose
    from inference_core.config import ConfigError, dataset_language

    assert dataset_language(compose("dataset=DMSC")) == "zh"
    assert dataset_language(compose("dataset=custom")) == "en"
    assert dataset_language(compose("dataset=custom", "dataset.language=zh")) == "zh"
    with pytest.raises(ConfigError, match="dataset.language='fr'"):
        dataset_language(compose("dataset=custom", "dataset.language=fr"))
    chinese = [ItemInput(("我爱北京", "我爱"), "我爱北京")]
    assert compute_metrics(chinese, "MyChineseSet", "zh")["bleu_tokenize"] == "zh"
    assert compute_metrics(chinese, "MyChineseSet")["bleu_tokenize"] == "13a"


def test_cached_rouge_tokenization_scores_like_rouge_score_itself() -> None:
    """The cached stems and reference tokens must not change a single ROUGE-L value."""
    import random

    from rouge_score import rouge_scorer

    from inference_core.evaluation.metrics import rouge_l

    rng = random.Random(1)
    words = "running runs ran the cats cat's dogs happily happiness quickly Generalizing, 42".split()
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    for _ in range(300):
        hyp = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        ref = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        assert rouge_l(hyp, ref, "en") == pytest.approx(
            100 * plain.score(ref, hyp)["rougeL"].fmeasure, abs=1e-9)


@pytest.mark.parametrize("language", ["en", "zh", "ja"])
def test_reference_read_once_scores_like_sacrebleu_itself(language: str) -> None:
    """score_item reads each reference once and adds the corpus scores up from its statistics:
    every figure must equal sacrebleu's own sentence_score and corpus_score."""
    import random

    from sacrebleu.metrics import BLEU, CHRF

    from inference_core.evaluation.metrics import bleu_text

    rng = random.Random(7)
    words = {"en": "the cat sat on a mat , dogs ran . quickly 42".split(),
             "zh": list("我爱北京天安门的猫狗跑了。"),
             "ja": ["猫", "が", "好き", "です", "。", "犬", "は", "走る"]}[language]
    joiner = " " if language == "en" else ""
    items = [ItemInput(tuple(joiner.join(rng.choice(words) for _ in range(rng.randint(1, 9)))
                             for _ in range(3)),
                       joiner.join(rng.choice(words) for _ in range(rng.randint(1, 9))))
             for _ in range(40)]
    bleu, chrf = BLEU(tokenize=bleu_tokenize(language), effective_order=True), CHRF()
    for item in items:
        scores = score_item(item, language)
        ref = bleu_text(item.reference, language)
        assert scores.best["bleu"] == pytest.approx(max(
            bleu.sentence_score(bleu_text(s, language), [ref]).score for s in item.samples))
        assert scores.mean["chrf"] == pytest.approx(sum(
            chrf.sentence_score(s, [item.reference]).score for s in item.samples) / 3)
    m = compute_metrics(items, "X", language)
    firsts = [i.samples[0] for i in items]
    corpus = BLEU(tokenize=bleu_tokenize(language)).corpus_score(
        [bleu_text(h, language) for h in firsts], [[bleu_text(i.reference, language) for i in items]])
    assert m["bleu_corpus"] == pytest.approx(corpus.score)
    assert m["chrf_corpus"] == pytest.approx(
        CHRF().corpus_score(firsts, [[i.reference for i in items]]).score)


def test_known_scores_are_used_and_the_rest_scored() -> None:
    items = [ItemInput(("a b c", "a b"), "a b c"), ItemInput(("x y",), "x y z"), ItemInput(())]
    whole = compute_metrics(items, "X", "en")
    known = [score_item(items[0], "en"), None, None]
    assert compute_metrics(items, "X", "en", known=known) == whole
