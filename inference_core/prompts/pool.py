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
import pickle
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from inference_core.cpus import usable_cpus
from inference_core.data.records import Location, UserRecord
from inference_core.prompts.builder import Ablation, Prompt, PromptBuilder
from inference_core.prompts.settings import PromptSettings

Unfit = tuple[Location, str]
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


@dataclass(frozen=True)
class BuiltUser:
    """One user built by one builder: its prompts and the items that cannot fit, or the error
    that building raised (a template's, or a bug's): that builder's job fails, not the others."""

    index: int  # which builder
    user: UserRecord
    prompts: list[Prompt] = field(default_factory=list)
    unfit: list[Unfit] = field(default_factory=list)
    error: BaseException | None = None


def build_user(builder: PromptBuilder, user: UserRecord, index: int = 0) -> BuiltUser:
    """One user's prompts and their items that cannot fit; an error is returned, not raised."""
    prompts: list[Prompt] = []
    unfit: list[Unfit] = []
    try:
        for built in builder.build_user(user):
            (prompts if isinstance(built, Prompt) else unfit).append(built)  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - one job's failure, reported by its caller
        return BuiltUser(index, user, error=err)
    return BuiltUser(index, user, prompts, unfit)


def portable(built: BuiltUser) -> BuiltUser:
    """A worker's result as it can travel back: an error that cannot be pickled becomes a
    RuntimeError that says what it was."""
    if built.error is None:
        return built
    try:
        pickle.loads(pickle.dumps(built.error))
        return built
    except Exception:  # noqa: BLE001 - any pickling failure, either way
        error = RuntimeError(f"{type(built.error).__name__}: {built.error}")
        return BuiltUser(built.index, built.user, error=error)


# A worker process's builders, made once by its initializer (one list per worker process).
_worker_builders: list[PromptBuilder] = []


def _start_worker(specs: Sequence[BuilderSpec]) -> None:
    from transformers import AutoTokenizer

    tokenizers: dict[str, Any] = {}
    for spec in specs:
        if spec.tokenizer_path not in tokenizers:
            tokenizers[spec.tokenizer_path] = AutoTokenizer.from_pretrained(spec.tokenizer_path)
        _worker_builders.append(spec.make(tokenizers[spec.tokenizer_path]))


def _build_task(task: list[tuple[int, UserRecord]],
                ) -> list[tuple[list[Prompt], list[Unfit], BaseException | None]]:
    """In a worker: each user's prompts, unfit items and error (not the user: the caller has it)."""
    built = [portable(build_user(_worker_builders[index], user, index)) for index, user in task]
    return [(b.prompts, b.unfit, b.error) for b in built]


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

    def build(self, users: Iterable[tuple[int, UserRecord]]) -> Iterator[BuiltUser]:
        """Each (builder index, user) built, in input order."""
        if self.executor is None:
            for index, user in users:
                yield build_user(self.builders[index], user, index)
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
    def _finished(task: list[tuple[int, UserRecord]], future: Future) -> Iterator[BuiltUser]:
        for (index, user), (prompts, unfit, error) in zip(task, future.result()):
            yield BuiltUser(index, user, prompts, unfit, error)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def __enter__(self) -> PromptPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
