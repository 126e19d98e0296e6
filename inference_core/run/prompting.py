"""A job's prompts: its builder, and the thread that builds them while the engine works.

Prompts are built one user at a time and handed to the engine as soon as a user's are ready,
so the engine starts on the first users while the rest are still being tokenized.
"""
from __future__ import annotations

import logging
import threading
import time
from itertools import takewhile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from inference_core.data.loader import load_dataset
from inference_core.data.records import SkippedItem, UserRecord
from inference_core.engine import GenerationRequest
from inference_core.prompts.builder import Prompt, PromptBuilder, build_prompts
from inference_core.prompts.pool import PromptPool
from inference_core.run.feed import RequestFeed
from inference_core.run.job import Job
from inference_core.rundir.layout import PROMPTS_FILE

log = logging.getLogger(__name__)


def load_tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def prompt_builder(job: Job, tokenizer: Any, keep_text: bool = False) -> PromptBuilder:
    """The job's prompt builder: its format, ablation, chat template and token budget."""
    # An endpoint's chat API takes messages, not the rendered text: keep them for it.
    chat = job.engine_cfg.get("api") == "chat"
    return PromptBuilder(tokenizer, job.prompt, job.ablation, job.prompt_budget,
                         keep_text=keep_text, keep_messages=chat)


def all_prompts(job: Job) -> list[Prompt]:
    """Every prompt of the job's dataset as a run builds it: no shard, nothing resumed."""
    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    return build_prompts(prompt_builder(job, load_tokenizer(job.model_path)), dataset.users)[0]


@dataclass
class BuildTally:
    """What building one run's prompts gave: counts and the items that could not fit."""

    prompts: int = 0
    truncated: int = 0
    unfit: list[SkippedItem] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class BuildTask:
    """One run's share of the building: its users, its builder, and where requests go."""

    users: Sequence[UserRecord]
    builder: PromptBuilder
    # (user, its prompts, its items that cannot fit) -> the user's requests, tagged for the
    # shared engine call.
    register: Callable[[UserRecord, list[Prompt], list[SkippedItem]], list[GenerationRequest]]
    tally: BuildTally


class PromptThread(threading.Thread):
    """Builds every task's prompts in order, user by user, into one feed per sampling group,
    with `workers` processes (prompts.pool; None: from the CPU count, 1: in this thread)."""

    def __init__(self, groups: Sequence[tuple[Sequence[BuildTask], RequestFeed]],
                 workers: int | None = None) -> None:
        super().__init__(name="prompt-builder", daemon=True)
        self.groups = groups
        self.workers = workers
        self.stopped = threading.Event()
        self.finished_at: float | None = None

    def run(self) -> None:
        pool: PromptPool | None = None
        index = 0  # the task's builder in the pool: tasks in order, over all groups
        for number, (tasks, feed) in enumerate(self.groups):
            try:
                pool = pool or PromptPool([t.builder for g, _ in self.groups for t in g],
                                          self.workers)
                for task in tasks:
                    self._build(task, index, feed, pool)
                    index += 1
            except BaseException as err:  # noqa: BLE001 - re-raised in the engine's thread
                for _, later in self.groups[number:]:
                    later.close(err)
                break
            feed.close()
        else:
            self.finished_at = time.perf_counter()
        if pool is not None:
            pool.close()

    def _build(self, task: BuildTask, index: int, feed: RequestFeed, pool: PromptPool) -> None:
        start = time.perf_counter()
        users = ((index, u) for u in takewhile(lambda _: not self.stopped.is_set(), task.users))
        for _, user, prompts, unfit in pool.build(users):
            if self.stopped.is_set():
                return
            skipped = [SkippedItem(loc, user.id_value, why) for loc, why in unfit]
            task.tally.unfit += skipped
            task.tally.prompts += len(prompts)
            task.tally.truncated += sum(p.truncated for p in prompts)
            feed.put(task.register(user, prompts, skipped))
        task.tally.seconds += time.perf_counter() - start


def write_prompts_file(job: Job, tokenizer: Any) -> Path:
    """dry_run: every prompt of the job's users, one JSON line each, as the engine would get it.

    `text` is the exact string given to the tokenizer (chat envelope included); nothing else is
    written to the folder, so a real run afterwards starts as if none had happened.
    """
    import orjson

    from inference_core.rundir.writers import write_bytes_atomic

    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    builder = prompt_builder(job, tokenizer, keep_text=True)
    lines = []
    for user in dataset.users:
        for built in builder.build_user(user):
            if not isinstance(built, Prompt):
                location, why = built
                lines.append({"user_hash": user.id_value, "location": location.as_dict(),
                              "skipped": why})
                continue
            lines.append({"user_hash": user.id_value, "location": built.location.as_dict(),
                          "text": built.text,
                          "prompt_tokens": built.num_tokens, "truncated": built.truncated})
    path = job.output_dir / PROMPTS_FILE
    write_bytes_atomic(path, b"".join(orjson.dumps(line) + b"\n" for line in lines))
    log.info("dry run: %d prompts of %d users in %s", len(lines), len(dataset.users), path)
    return path
