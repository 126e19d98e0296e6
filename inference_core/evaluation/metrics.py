"""Quality metrics for generated samples: BLEU, chrF, ROUGE-L, distinct-n and length.

Tokens follow the run's language: en whitespace words (sacrebleu 13a), zh characters, ja words
split by janome (its dictionary ships inside the package: nothing is downloaded).

All reference-based scores are on a 0-100 scale (sacrebleu's convention; ROUGE-L F1 is
multiplied by 100 to match), distinct-n is a 0-1 ratio and length is in characters.
"""

from __future__ import annotations

import multiprocessing
import statistics
from array import array
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rouge_score import rouge_scorer

if TYPE_CHECKING:  # imported where scores are made: a run that does not evaluate needs no sacrebleu
    from sacrebleu.metrics import BLEU, CHRF

# ItemInput is re-exported: most callers import it from here.
from inference_core.cpus import usable_cpus
from inference_core.evaluation.item_input import ItemInput
from inference_core.evaluation.scorers import task_metrics

# Datasets whose text is Chinese; everything else is treated as whitespace-delimited.
CHINESE_DATASETS = frozenset({"dmsc"})

REFERENCE_METRICS = ("bleu", "chrf", "rouge_l")


@dataclass(frozen=True, slots=True)  # one per item, kept from the background scoring
class ItemScores:
    """Per-item scores; reference scores are None when the item has no reference."""

    distinct_1: float | None
    distinct_2: float | None
    best: dict[str, float] | None
    mean: dict[str, float] | None
    # The first sample's (BLEU, chrF) match statistics: what the corpus scores add up.
    first_sample_statistics: tuple[list[Any], list[Any]] | None = None


def language_for_dataset(dataset: str | None) -> str:
    """The guess for runs that recorded no `dataset.language`: "zh" for DMSC, "en" otherwise."""
    return "zh" if (dataset or "").strip().lower() in CHINESE_DATASETS else "en"


def bleu_tokenize(language: str) -> str:
    """sacrebleu tokenizer name: 13a would treat a whole Chinese or Japanese sentence as one
    token. Japanese is split by janome first and then scored as given ("none")."""
    return {"zh": "zh", "ja": "none"}.get(language, "13a")


@lru_cache(maxsize=1)
def _janome() -> Any:
    from janome.tokenizer import Tokenizer  # pure Python; loads its dictionary once (~1 s)

    return Tokenizer(wakati=True)


def japanese_words(text: str) -> list[str]:
    """janome's words of a Japanese text, without whitespace tokens."""
    return [w for w in _janome().tokenize(text) if w.strip()]


def tokens(text: str, language: str) -> list[str]:
    """Tokens for distinct-n: non-space characters for Chinese, janome words for Japanese,
    whitespace words otherwise."""
    if language == "zh":
        return [ch for ch in text if not ch.isspace()]
    if language == "ja":
        return japanese_words(text)
    return text.split()


def bleu_text(text: str, language: str) -> str:
    """The text as BLEU sees it: Japanese pre-split into space-separated words."""
    return " ".join(japanese_words(text)) if language == "ja" else text


def distinct_n(samples: Sequence[str], n: int, language: str) -> float | None:
    """Unique n-grams / total n-grams pooled over all samples (n-grams never span samples).

    Returns None when the samples contain no n-gram at all, so empty items do not count as 0.
    """
    total = 0
    unique: set[tuple[str, ...]] = set()
    for sample in samples:
        toks = tokens(sample, language)
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else None


class CharTokenizer:
    """rouge-score tokenizer for Chinese: one token per alphanumeric character.

    rouge-score's default tokenizer keeps only [a-z0-9], which turns Chinese text into
    nothing; str.isalnum() is true for CJK ideographs and false for punctuation, so this
    mirrors the default's punctuation dropping while keeping the characters.
    """

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if ch.isalnum()]


class JapaneseWordTokenizer:
    """rouge-score tokenizer for Japanese: janome words, punctuation-only tokens dropped."""

    def tokenize(self, text: str) -> list[str]:
        return [w for w in japanese_words(text.lower()) if any(ch.isalnum() for ch in w)]


class CachedStemTokenizer:
    """rouge-score's own English tokenization (lower-case words, Porter stems), with the work
    that repeats cached: a reference is tokenized once for all its samples, a word stemmed once
    for the whole run."""

    def __init__(self) -> None:
        from nltk.stem import porter
        from rouge_score import tokenize as rouge_tokenize

        stem = lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)
        self._stemmer = type("Stemmer", (), {"stem": staticmethod(stem)})
        self._tokenize = rouge_tokenize.tokenize
        self.tokenize = lru_cache(maxsize=1 << 12)(self._tokens)

    def _tokens(self, text: str) -> list[str]:
        return self._tokenize(text, self._stemmer)


@lru_cache(maxsize=None)
def _bleu(language: str) -> BLEU:
    from sacrebleu.metrics import BLEU

    # effective_order avoids a zero sentence BLEU just because a short text lacks 4-grams.
    return BLEU(tokenize=bleu_tokenize(language), effective_order=True)


@lru_cache(maxsize=None)
def _corpus_bleu(language: str) -> BLEU:
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=bleu_tokenize(language))


@lru_cache(maxsize=None)
def _chrf() -> CHRF:
    from sacrebleu.metrics import CHRF

    return CHRF()


@lru_cache(maxsize=None)
def _rouge(language: str) -> rouge_scorer.RougeScorer:
    if language == "zh":
        return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())
    if language == "ja":
        return rouge_scorer.RougeScorer(["rougeL"], tokenizer=JapaneseWordTokenizer())
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CachedStemTokenizer())


def sentence_bleu(hypothesis: str, reference: str, language: str) -> float:
    return float(_bleu(language).sentence_score(
        bleu_text(hypothesis, language), [bleu_text(reference, language)]).score)


def sentence_chrf(hypothesis: str, reference: str) -> float:
    return float(_chrf().sentence_score(hypothesis, [reference]).score)


def rouge_l(hypothesis: str, reference: str, language: str) -> float:
    """ROUGE-L F1 x 100 (LCS over characters for Chinese, janome words for Japanese, stemmed
    words otherwise)."""
    return 100.0 * _rouge(language).score(reference, hypothesis)["rougeL"].fmeasure


class ReferenceScorer:
    """Sentence BLEU/chrF/ROUGE-L of many samples against one reference, the reference read once.

    sacrebleu's sentence_score is: cache the reference's n-grams, compute the hypothesis's match
    statistics against them, compute the score from those statistics. The same steps are taken
    here with the reference cached once per item rather than once per sample; the statistics
    also add up to the corpus scores (sacrebleu sums them the same way), so the corpus BLEU/chrF
    need no second pass. tests/test_metrics.py checks the figures against sentence_score and
    corpus_score themselves.
    """

    def __init__(self, reference: str, language: str) -> None:
        self.language, self.reference = language, reference
        self._bleu, self._chrf = _bleu(language), _chrf()
        self._bleu_ref = self._bleu._cache_references([[bleu_text(reference, language)]])[0]
        self._chrf_ref = self._chrf._cache_references([[reference]])[0]

    def statistics(self, hypothesis: str) -> tuple[list[Any], list[Any]]:
        """(BLEU, chrF) match statistics of one sample."""
        bleu_hyp = self._bleu._preprocess_segment(bleu_text(hypothesis, self.language))
        return (self._bleu._compute_segment_statistics(bleu_hyp, self._bleu_ref),
                self._chrf._compute_segment_statistics(self._chrf._preprocess_segment(hypothesis),
                                                       self._chrf_ref))

    def scores(self, hypothesis: str) -> tuple[dict[str, float], tuple[list[Any], list[Any]]]:
        stats = self.statistics(hypothesis)
        return {"bleu": float(self._bleu._aggregate_and_compute([stats[0]]).score),
                "chrf": float(self._chrf._aggregate_and_compute([stats[1]]).score),
                "rouge_l": rouge_l(hypothesis, self.reference, self.language)}, stats


def score_item(item: ItemInput, language: str) -> ItemScores:
    """Diversity of the item's samples and best/mean reference scores over them."""
    best = mean = first = None
    if item.reference is not None and item.samples:
        scorer = ReferenceScorer(item.reference, language)
        unique = {s: scorer.scores(s) for s in dict.fromkeys(item.samples)}
        per_sample = [unique[s][0] for s in item.samples]  # repeated samples are scored once
        best = {m: max(s[m] for s in per_sample) for m in REFERENCE_METRICS}
        mean = {m: statistics.fmean(s[m] for s in per_sample) for m in REFERENCE_METRICS}
        first = unique[item.samples[0]][1]
    return ItemScores(
        distinct_1=distinct_n(item.samples, 1, language),
        distinct_2=distinct_n(item.samples, 2, language),
        best=best,
        mean=mean,
        first_sample_statistics=first,
    )


# Below this many items one process is faster than starting workers.
PARALLEL_MIN_ITEMS = 2000


def _score_chunk(chunk: Sequence[ItemInput], language: str) -> list[ItemScores]:
    return [score_item(i, language) for i in chunk]


def score_items(items: Sequence[ItemInput], language: str) -> list[ItemScores]:
    """score_item over every item, across the machine's cores for large runs (the sentence
    metrics are pure Python: one core scores ~1,000 samples a second)."""
    workers = min(usable_cpus(), 8)
    if workers < 2 or len(items) < PARALLEL_MIN_ITEMS:
        return _score_chunk(items, language)
    size = -(-len(items) // (workers * 4))
    chunks = [items[i:i + size] for i in range(0, len(items), size)]
    # fork: the workers need no import of the caller's main module; they run only the metrics'
    # pure-Python code, never the engine's threads they inherit.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [s for part in pool.map(_score_chunk, chunks, [language] * len(chunks)) for s in part]


def score_all(items: Sequence[ItemInput], language: str,
              known: Sequence[ItemScores | None] | None = None) -> list[ItemScores]:
    """Every item's scores: the known ones as they are, the rest scored (score_items)."""
    known = list(known) if known is not None else [None] * len(items)
    fresh = iter(score_items([i for i, k in zip(items, known, strict=True) if k is None],
                             language))
    return [k if k is not None else next(fresh) for k in known]


class MetricTotals:
    """The run-level figures, added up one scored item at a time: no list of every item's
    scores is held (at 100k items they were 0.14 GB). The BLEU/chrF match statistics are summed
    as they come, which is what sacrebleu's corpus scores do with the whole list; the per-item
    scores are kept as plain floats for the exact means statistics.fmean gives."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.items: list[ItemInput] = []  # the task metrics read the items themselves
        self.num_scored_items = self.num_samples = self.sample_chars = 0
        self.bleu_stats: list[Any] | None = None
        self.chrf_stats: list[Any] | None = None
        names = [f"{metric}_{kind}_of_n" for metric in REFERENCE_METRICS
                 for kind in ("mean", "best")]
        self.values: dict[str, array[float]] = {
            name: array("d") for name in [*names, "distinct_1", "distinct_2"]}

    def add(self, item: ItemInput, scores: ItemScores) -> None:
        """One item with samples and its scores (score_item's)."""
        self.items.append(item)
        self.num_samples += len(item.samples)
        self.sample_chars += sum(map(len, item.samples))
        if scores.best is not None and scores.mean is not None:
            self.num_scored_items += 1
            for metric in REFERENCE_METRICS:
                self.values[f"{metric}_mean_of_n"].append(scores.mean[metric])
                self.values[f"{metric}_best_of_n"].append(scores.best[metric])
        for name in ("distinct_1", "distinct_2"):
            if getattr(scores, name) is not None:
                self.values[name].append(getattr(scores, name))
        if scores.first_sample_statistics is not None:
            bleu, chrf = scores.first_sample_statistics
            self.bleu_stats = _added(self.bleu_stats, bleu)
            self.chrf_stats = _added(self.chrf_stats, chrf)

    def _mean(self, name: str) -> float | None:
        return statistics.fmean(self.values[name]) if self.values[name] else None

    def result(self, scorer: str | None) -> dict[str, Any]:
        """metrics.json's figures; reference metrics are None when nothing has a reference."""
        result: dict[str, Any] = {
            "language": self.language, "bleu_tokenize": bleu_tokenize(self.language),
            "num_items": len(self.items), "num_scored_items": self.num_scored_items,
            "num_samples": self.num_samples,
            # Corpus BLEU/chrF over the first sample of each referenced item (the greedy-like view).
            "bleu_corpus": None if self.bleu_stats is None else float(
                _corpus_bleu(self.language)._aggregate_and_compute([self.bleu_stats]).score),
            "chrf_corpus": None if self.chrf_stats is None else float(
                _chrf()._aggregate_and_compute([self.chrf_stats]).score),
        }
        for metric in REFERENCE_METRICS:
            for kind in ("mean", "best"):
                result[f"{metric}_{kind}_of_n"] = self._mean(f"{metric}_{kind}_of_n")
        result["distinct_1"] = self._mean("distinct_1")
        result["distinct_2"] = self._mean("distinct_2")
        result["mean_chars"] = (self.sample_chars / self.num_samples if self.num_samples
                                else None)
        result.update(task_metrics(scorer, self.items))
        return result


def _added(total: list[Any] | None, stats: Sequence[Any]) -> list[Any]:
    return list(stats) if total is None else [a + b for a, b in zip(total, stats)]


def compute_metrics(items: Sequence[ItemInput], dataset: str | None,
                    language: str | None = None, scorer: str | None = None,
                    known: Sequence[ItemScores | None] | None = None) -> dict[str, Any]:
    """Aggregate metrics over items; reference metrics are None when nothing has a reference.

    `language` ("en", "zh" or "ja", the run's `dataset.language`) wins over the guess from the
    name. `scorer` (the run's `dataset.scorer`: text, rating, choice) adds that task's metrics
    to the text metrics every run gets. `known`: each item's scores where they are already
    computed (score_item's, e.g. while the run generated), None where not.
    """
    language = language or language_for_dataset(dataset)
    totals = MetricTotals(language)
    for item, scores in zip(items, score_all(items, language, known)):
        if item.samples:  # an item with no samples has nothing to score
            totals.add(item, scores)
    return totals.result(scorer)
