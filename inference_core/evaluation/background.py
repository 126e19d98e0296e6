"""Score users' items while the run still generates, so the metrics after the run only add up.

The sentence metrics are pure Python (~0.2 ms a sample on one core here): at 100k items x 5
samples they would take minutes after the last sample. Each finished user's items go to a small
pool of worker processes instead; evaluate_run then takes every score whose item on disk is
still the one scored (same samples, same reference) and scores only the rest. Nothing here is
written to disk: a run that stops loses only work evaluate_run redoes.

Workers are spawned, not forked: the run's process holds the engine's threads and the prompt
thread, which a forked child must not inherit. A worker that cannot start or dies (a script
without a `__main__` guard, the OOM killer) only turns this off, with a warning.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Mapping

from inference_core.cpus import usable_cpus
from inference_core.evaluation.metrics import ItemInput, ItemScores, score_item
from inference_core.rundir.layout import UserFile

log = logging.getLogger(__name__)

# Items sent to a worker at a time: large enough that pickling is a small part of the work.
BATCH_ITEMS = 256
# Below this many items the scoring after the run takes about a second: no workers are started.
MIN_ITEMS = 2000

ItemKey = tuple[str, str]  # (user_hash as text, location key)


def item_key(user: UserFile, location_key: str) -> ItemKey:
    return user.key, location_key


def fingerprint(item: ItemInput) -> int:
    """What a score was computed from; a differing item on disk is scored again."""
    return hash((item.samples, item.reference))


def score_batch(items: list[ItemInput], language: str) -> list[bytes]:
    """What one worker does with one batch: each item's scores pickled, as the run keeps them
    (one item's ItemScores is 1.3 KB of objects and 0.3 KB pickled: 0.1 GB at 100k items)."""
    return [pickle.dumps(score_item(i, language), pickle.HIGHEST_PROTOCOL) for i in items]


def default_workers() -> int:
    """CPUs left over by the engine's process and this one's threads, at most four."""
    return max(1, min(4, usable_cpus() - 2))


@dataclass(frozen=True)
class KnownScores:
    """Scores computed during the run, keyed by item, with the language they were computed in."""

    language: str
    # (fingerprint, scores): the workers' scores stay pickled until they are looked up
    scores: Mapping[ItemKey, tuple[int, ItemScores | bytes]] = field(default_factory=dict)

    def has(self, key: ItemKey, item: ItemInput, language: str) -> bool:
        """Whether lookup would find the item's scores (without unpickling them)."""
        known = self.scores.get(key) if language == self.language else None
        return known is not None and known[0] == fingerprint(item)

    def lookup(self, key: ItemKey, item: ItemInput, language: str) -> ItemScores | None:
        if not self.has(key, item, language):
            return None
        scores = self.scores[key][1]
        return pickle.loads(scores) if isinstance(scores, bytes) else scores


class BackgroundScorer:
    """Worker processes that score the items of each user handed to them, in batches."""

    def __init__(self, language: str, workers: int | None = None) -> None:
        self.language = language
        self._pool = ProcessPoolExecutor(workers or default_workers(),
                                         mp_context=multiprocessing.get_context("spawn"))
        self._batch: list[tuple[ItemKey, ItemInput]] = []
        self._sent: list[tuple[list[tuple[ItemKey, int]], Future]] = []
        self.broken = False

    def add(self, user: UserFile) -> None:
        """Queue a finished user's items; a full batch goes to a worker at once."""
        for item in user.items:
            if item.generated_samples:
                self._batch.append((item_key(user, item.location.key()),
                                    ItemInput(item.generated_samples, item.reference)))
        if len(self._batch) >= BATCH_ITEMS:
            self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if not batch or self.broken:
            return
        keys = [(key, fingerprint(item)) for key, item in batch]
        try:
            self._sent.append((keys, self._pool.submit(score_batch, [i for _, i in batch],
                                                       self.language)))
        except BrokenProcessPool as err:  # the run goes on: evaluate_run scores everything
            self.broken = True
            log.warning("background scoring stopped (%s); the items are scored after the run",
                        err)

    def collect(self) -> KnownScores:
        """Every score, once the workers have finished what was sent (a failed batch is left to
        evaluate_run, with a warning)."""
        self._send()
        scores: dict[ItemKey, tuple[int, ItemScores | bytes]] = {}
        for keys, future in self._sent:
            try:
                results = future.result()
            except Exception as err:  # noqa: BLE001 - evaluate_run scores these items itself
                log.warning("background scoring of %d items failed (%s); scored after the run",
                            len(keys), err)
                continue
            scores.update({key: (fp, s) for (key, fp), s in zip(keys, results)})
        self._sent = []
        return KnownScores(self.language, scores)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def start_background_scorer(language: str, num_items: int,
                            workers: int | None = None) -> BackgroundScorer | None:
    """A scorer for a run of num_items items, or None where scoring after the run is quick."""
    if num_items < MIN_ITEMS:
        return None
    return BackgroundScorer(language, workers)
