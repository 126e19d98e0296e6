"""Synthetic DMSC users for the benchmark: the sample's reviews resampled into long histories.

Deterministic for a given seed: new user_hash values, profiles mixed from the sample's, and each
user's history (train.json) and test items (test_leaderboard.json) drawn from the pool of every
review in the sample. The result is a dataset folder in the benchmark schema, loadable like any
other (`dataset.path=...`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from inference_core.data.files import read_json_array
from inference_core.data.loader import TEST_FILE, TRAIN_FILE
from inference_core.rundir.writers import json_array_atomic


@dataclass(frozen=True)
class Review:
    title: str  # continuation_prefix, e.g. "花样年华: "
    text: str
    rating: int | None


def review_pool(sample: Path) -> list[Review]:
    """Every review in the sample (history and test items that carry one), de-duplicated."""
    seen: set[tuple[str, str]] = set()
    pool: list[Review] = []
    for name in (TRAIN_FILE, TEST_FILE):
        for record in read_json_array(sample / name):
            for col in record.get("task", {}).get("task_behavior_collections", []):
                for item in col.get("data", []):
                    text, title = item.get("continuation"), item.get("continuation_prefix")
                    if isinstance(text, str) and text and isinstance(title, str):
                        if (title, text) not in seen:
                            seen.add((title, text))
                            rating = item.get("rating")
                            pool.append(Review(title, text, rating if isinstance(rating, int) else None))
    if not pool:
        raise ValueError(f"{sample}: no reviews to resample")
    return pool


def sample_templates(sample: Path) -> list[dict[str, Any]]:
    return [r for r in read_json_array(sample / TEST_FILE) if isinstance(r, dict)]


def review_item(review: Review, day: date, with_text: bool = True) -> dict[str, Any]:
    item: dict[str, Any] = {"context": [], "continuation_prefix": review.title}
    if with_text:
        item["continuation"] = review.text
    item["timestamp"] = day.isoformat()
    if review.rating is not None and with_text:
        item["rating"] = review.rating
    return item


def synthetic_user(rng: random.Random, index: int, pool: list[Review],
                   templates: list[dict[str, Any]], history: tuple[int, int],
                   items: tuple[int, int]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train record, test record) of one new user."""
    template = rng.choice(templates)
    user_hash = f"{rng.getrandbits(64):016x}"
    base = template.get("user") or {}
    profile = dict(base.get("profile") or {})
    profile["name"] = f"{profile.get('name', '影迷')}_{index:05d}"
    if "age" in profile:
        profile["age"] = rng.randint(18, 60)
    if "gender" in profile:
        profile["gender"] = rng.choice(["f", "m"])
    personality = orjson.loads(orjson.dumps(base.get("personality") or {}))
    big_five = (personality.get("structured") or {}).get("big_five")
    if isinstance(big_five, dict):
        for trait in big_five:
            big_five[trait] = round(rng.uniform(1.0, 5.0), 1)
    if templates and "unstructured" in personality:  # someone else's taste, so users differ more
        other = (rng.choice(templates).get("user") or {}).get("personality") or {}
        personality["unstructured"] = other.get("unstructured", personality["unstructured"])
    n_history = rng.randint(*history)
    n_items = rng.randint(*items)
    picks = [pool[i] for i in rng.sample(range(len(pool)), min(len(pool), n_history + n_items))]
    past, future = picks[:n_history], picks[n_history:]
    day = date(2012, 1, 1) + timedelta(days=rng.randint(0, 1500))
    past_items = []
    for review in past:
        day += timedelta(days=rng.randint(1, 20))
        past_items.append(review_item(review, day))
    test_items = []
    for i, review in enumerate(future):
        day += timedelta(days=rng.randint(1, 20))
        test_items.append(review_item(review, day, with_text=(i % 2 == 0)))
    task = template.get("task") or {}
    collection = (task.get("task_behavior_collections") or [{}])[0]

    def record(data: list[dict[str, Any]]) -> dict[str, Any]:
        return {"user_hash": user_hash, "user": {"profile": profile, "personality": personality},
                "task": {"description": task.get("description", ""),
                         "task_behavior_collections": [{
                             "type": collection.get("type", "movie_review"),
                             "type_desc": collection.get("type_desc", ""), "data": data}]}}

    return record(past_items), record(test_items)


def write_synthetic_dataset(sample: Path, target: Path, users: int, seed: int = 0,
                            history: tuple[int, int] = (20, 60), items: tuple[int, int] = (1, 3),
                            keep_sample_users: bool = True) -> Path:
    """The sample's users (when kept) followed by `users` new ones, written to `target` a user
    at a time (never the whole dataset in memory)."""
    rng = random.Random(seed)
    pool = review_pool(sample)
    templates = sample_templates(sample)
    taken = {str(r.get("user_hash")) for r in templates if isinstance(r, dict)}
    target.mkdir(parents=True, exist_ok=True)
    with json_array_atomic(target / TRAIN_FILE, durable=False) as train, \
            json_array_atomic(target / TEST_FILE, durable=False) as test:
        if keep_sample_users:
            for record in read_json_array(sample / TRAIN_FILE):
                train(record)
            for record in templates:
                test(record)
        for index in range(users):
            past, future = synthetic_user(rng, index, pool, templates, history, items)
            while past["user_hash"] in taken:  # never reuse a hash (sample's or earlier synthetic)
                past["user_hash"] = future["user_hash"] = f"{rng.getrandbits(64):016x}"
            taken.add(past["user_hash"])
            train(past)
            test(future)
    return target
