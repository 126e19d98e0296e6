"""Prompts built in worker processes: users in, each with its prompts out, in input order.

Building is Python (Jinja, the tokenizer's calls) and holds the interpreter lock, which the run's
own process shares with the engine loop, the collector and the writer. With `workers` > 1 each
worker process makes the same builders from their picklable description (BuilderSpec: the
tokenizer's folder, settings, ablation, budget) and builds a few users at a time; with 1 the
builders run in the calling process, no pool. Workers are started with spawn: the run's process
may hold CUDA state, which a forked child must not inherit. At most a few tasks per worker are in
flight, so memory stays flat however many users go in.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from inference_core.cpus import usable_cpus
from inference_core.data.records import Location, UserRecord
from inference_core.prompts.builder import Ablation, Prompt, PromptBuilder
from inference_core.prompts.settings import PromptSettings

Unfit = tuple[Location, str]
# (builder index, user, the user's prompts, the user's items that cannot fit)
Built = tuple[int, UserRecord, list[Prompt], list[Unfit]]
MAX_DEFAULT_WORKERS = 8
USERS_PER_TASK = 8
TASKS_PER_WORKER = 4  # in flight: enough to keep a worker busy while its last result travels


def default_workers() -> int:
    """Half the usable CPUs, at most 8: the other half serve the engine loop, the writer and the
    scoring workers. 1 (no pool) below 4 CPUs, where a pool only competes with them."""
    return max(1, min(MAX_DEFAULT_WORKERS, usable_cpus() // 2))


@dataclass(frozen=True)
class BuilderSpec:
    """What a worker needs to make the same PromptBuilder (picklable)."""

    tokenizer_path: str
    settings: PromptSettings
    ablation: Ablation
    budget: int
    keep_text: bool = False
    keep_messages: bool = False

    @classmethod
    def of(cls, builder: PromptBuilder) -> BuilderSpec:
        """The description of a builder whose tokenizer was loaded from a local folder."""
        path = getattr(builder.tokenizer, "name_or_path", "")
        if not path or not Path(path).is_dir():
            raise ValueError(f"prompt workers load the tokenizer from its folder; this one came "
                             f"from {path!r}")
        return cls(str(path), builder.settings, builder.ablation, builder.budget,
                   builder.keep_text, builder.keep_messages)

    def make(self, tokenizer: Any) -> PromptBuilder:
        return PromptBuilder(tokenizer, self.settings, self.ablation, self.budget,
                             keep_text=self.keep_text, keep_messages=self.keep_messages)


def build_user(builder: PromptBuilder, user: UserRecord) -> tuple[list[Prompt], list[Unfit]]:
    """One user's prompts, and their items that cannot fit."""
    prompts: list[Prompt] = []
    unfit: list[Unfit] = []
    for built in builder.build_user(user):
        (prompts if isinstance(built, Prompt) else unfit).append(built)  # type: ignore[arg-type]
    return prompts, unfit


# A worker process's builders, made once by its initializer (one list per worker process).
_worker_builders: list[PromptBuilder] = []


def _start_worker(specs: Sequence[BuilderSpec]) -> None:
    from transformers import AutoTokenizer

    tokenizers: dict[str, Any] = {}
    for spec in specs:
        if spec.tokenizer_path not in tokenizers:
            tokenizers[spec.tokenizer_path] = AutoTokenizer.from_pretrained(spec.tokenizer_path)
        _worker_builders.append(spec.make(tokenizers[spec.tokenizer_path]))


def _build_task(task: list[tuple[int, UserRecord]]) -> list[tuple[list[Prompt], list[Unfit]]]:
    return [build_user(_worker_builders[index], user) for index, user in task]


class PromptPool:
    """Builds users' prompts with `workers` processes (1: in this process), in input order."""

    def __init__(self, builders: Sequence[PromptBuilder], workers: int | None = None,
                 users_per_task: int = USERS_PER_TASK) -> None:
        self.builders = list(builders)
        self.workers = self.workers_for(workers)
        self.users_per_task = users_per_task
        self.executor: ProcessPoolExecutor | None = None
        if self.workers > 1:
            specs = [BuilderSpec.of(b) for b in self.builders]
            self.executor = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(specs,))

    @staticmethod
    def workers_for(workers: int | None) -> int:
        return default_workers() if workers is None else max(1, int(workers))

    def build(self, users: Iterable[tuple[int, UserRecord]]) -> Iterator[Built]:
        """(builder index, user, prompts, unfit) for each (builder index, user), in order."""
        if self.executor is None:
            for index, user in users:
                yield (index, user, *build_user(self.builders[index], user))
            return
        pending: deque[tuple[list[tuple[int, UserRecord]], Future]] = deque()
        limit = self.workers * TASKS_PER_WORKER
        for task in self._tasks(users):
            pending.append((task, self.executor.submit(_build_task, task)))
            if len(pending) >= limit:
                yield from self._finished(*pending.popleft())
        while pending:
            yield from self._finished(*pending.popleft())

    def _tasks(self, users: Iterable[tuple[int, UserRecord]]) -> Iterator[list[tuple[int, UserRecord]]]:
        task: list[tuple[int, UserRecord]] = []
        for entry in users:
            task.append(entry)
            if len(task) == self.users_per_task:
                yield task
                task = []
        if task:
            yield task

    @staticmethod
    def _finished(task: list[tuple[int, UserRecord]], future: Future) -> Iterator[Built]:
        for (index, user), (prompts, unfit) in zip(task, future.result()):
            yield index, user, prompts, unfit

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def __enter__(self) -> PromptPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
