"""A job's prompts: its builder, and the thread that builds them while the engine works.

Prompts are built one user at a time and handed to the engine as soon as a user's are ready,
so the engine starts on the first users while the rest are still being tokenized.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from jinja2 import TemplateError

from inference_core.data.history import PackedHistory
from inference_core.data.loader import load_dataset
from inference_core.data.records import Location, SkippedItem, TestItem, UserRecord
from inference_core.engine import GenerationRequest
from inference_core.errors import ConfigError
from inference_core.likelihood.collect import ScoreCollector
from inference_core.likelihood.targets import TargetBuilder
from inference_core.prompts.builder import Prompt, PromptBuilder, build_prompts
from inference_core.prompts.pool import BuiltUser, PromptPool
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


def score_collector(job: Job, tokenizer: Any, builder: PromptBuilder) -> ScoreCollector:
    """The job's scoring: its format's targets, its answer sets, its window; an item whose
    target is longer than max_tokens is refitted by the job's own builder."""
    return ScoreCollector(TargetBuilder(tokenizer, job.prompt, builder.envelope),
                          job.output_handlers, job.max_model_len, builder.fit_item)


def all_prompts(job: Job) -> list[Prompt]:
    """Every prompt of the job's dataset as a run builds it: no shard, nothing resumed."""
    dataset = load_dataset(job.dataset_name, job.dataset_path, job.references_file, job.max_users,
                           job.holdout)
    return build_prompts(prompt_builder(job, load_tokenizer(job.model_path)), dataset.users)[0]


@dataclass
class BuildTally:
    """The time building one run's prompts took."""

    seconds: float = 0.0


class PromptBuildError(RuntimeError):
    """Building one job's prompts raised: that job stops, the other jobs of the command go on."""


def build_failure(user: UserRecord, err: BaseException) -> Exception:
    """The job's failure, naming the user: a template's error is the format's (exit 2), any
    other is a bug's."""
    what = f"building the prompts of user {user.id_value!r} failed: {type(err).__name__}: {err}"
    failure = ConfigError(what) if isinstance(err, TemplateError) else PromptBuildError(what)
    failure.__cause__ = err
    return failure


@dataclass(frozen=True)
class BuildTask:
    """One job's share of the building: its builder, the users it still needs, and where their
    requests go."""

    builder: PromptBuilder
    wanted: frozenset[str]  # user_hash of every user this job still generates
    # (user, its prompts, its items that cannot fit) -> the user's requests, tagged for the
    # shared engine call.
    register: Callable[[UserRecord, list[Prompt], list[SkippedItem]], list[GenerationRequest]]
    tally: BuildTally
    # Building this job's prompts failed (called once): it gets no more users.
    fail: Callable[[BaseException], None]


@dataclass(frozen=True)
class BuildPlan:
    """The jobs of one loaded dataset: its users in file order, each built for every job that
    wants it before the next user, so one user's prompts of every ablation reach the engine
    together (their shared prefix is cached once)."""

    users: Sequence[UserRecord]
    tasks: Sequence[BuildTask]


class PromptThread(threading.Thread):
    """Builds every plan's prompts, user by user, into the feed the engine takes them from,
    with `workers` processes (prompts.pool; None: from the CPU count, 1: in this thread)."""

    def __init__(self, plans: Sequence[BuildPlan], feed: RequestFeed,
                 workers: int | None = None) -> None:
        super().__init__(name="prompt-builder", daemon=True)
        self.plans = plans
        self.feed = feed
        self.workers = workers
        self.stopped = threading.Event()
        self.finished_at: float | None = None
        # Each user's last task in build order: its packed history is let go after that one.
        self.last_task: dict[str, int] = {}
        # Tasks whose building failed: their jobs get no more users.
        self.failed: set[int] = set()

    def run(self) -> None:
        tasks = [task for plan in self.plans for task in plan.tasks]
        try:
            with PromptPool([task.builder for task in tasks], self.workers) as pool:
                last = time.perf_counter()
                for built in pool.build(self.work()):
                    if self.stopped.is_set():
                        return
                    if built.index not in self.failed:
                        self.deliver(built.index, tasks[built.index], built)
                    now = time.perf_counter()  # built beside the others: time between results
                    tasks[built.index].tally.seconds += now - last
                    last = now
                    if built.index == self.last_task[built.user.user_hash]:  # every job's: let go
                        release_history(built.user)
        except BaseException as err:  # noqa: BLE001 - re-raised in the engine's thread
            self.feed.close(err)
            return
        self.feed.close()
        self.finished_at = time.perf_counter()

    def deliver(self, index: int, task: BuildTask, built: BuiltUser) -> None:
        """A built user's requests into the feed; a failure stops only this task's job."""
        error = built.error
        if error is None:
            try:
                self.register(task, built.user, built.prompts, built.unfit)
                return
            except Exception as err:  # noqa: BLE001 - this job's, not the others'
                error = err
        self.failed.add(index)
        task.fail(build_failure(built.user, error))

    def work(self) -> Iterator[tuple[int, UserRecord]]:
        """(task index, user) in build order: user by user, each for every task that wants it."""
        first = 0
        for plan in self.plans:
            for user in plan.users:
                if self.stopped.is_set():
                    return
                wanted = [first + k for k, task in enumerate(plan.tasks)
                          if user.user_hash in task.wanted and first + k not in self.failed]
                if wanted:
                    self.last_task[user.user_hash] = wanted[-1]
                yield from ((index, user) for index in wanted)
            first += len(plan.tasks)

    def register(self, task: BuildTask, user: UserRecord, prompts: list[Prompt],
                 unfit: list[tuple[Location, str]]) -> None:
        skipped = [SkippedItem(loc, user.id_value, why) for loc, why in unfit]
        self.feed.put(task.register(user, prompts, skipped))


def scored_texts(scores: ScoreCollector, user: UserRecord, prompts: list[Prompt],
                 tests: dict[Location, TestItem], tokenizer: Any) -> dict[Location, dict[str, Any]]:
    """A dry run's view of what a likelihood run scores per item: the prompt text the targets
    follow (the generation prompt without its answer opener, refitted where a target is long)
    and each target's text and token counts, or why the item is unscored."""
    scores.add_user(user, prompts, tests)
    out: dict[Location, dict[str, Any]] = {}
    for location, item in scores.user_items(user.user_hash).items():
        if item.why is not None:
            out[location] = {"unscored": item.why}
            continue
        first = item.sequences[0]
        out[location] = {
            "scored_prompt": tokenizer.decode(first.token_ids[:first.target_start]),
            "scored_prompt_tokens": first.target_start,
            "targets": [{"option": s.option, "text": tokenizer.decode(s.token_ids[s.target_start:]),
                         "tokens": s.target_tokens, "merged_boundary": s.merged_boundary}
                        for s in item.sequences]}
    return out


def release_history(user: UserRecord) -> None:
    if isinstance(user.history, PackedHistory):
        user.history.release()


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
    scores = score_collector(job, tokenizer, builder) if job.scores else None
    tests = {i.location: i for u in dataset.users for i in u.items}
    lines = []
    for user in dataset.users:
        built = list(builder.build_user(user))
        prompts = [b for b in built if isinstance(b, Prompt)]
        scored = scored_texts(scores, user, prompts, tests, tokenizer) if scores else {}
        for one in built:
            if not isinstance(one, Prompt):
                location, why = one
                lines.append({"user_hash": user.id_value, "location": location.as_dict(),
                              "skipped": why})
                continue
            lines.append({"user_hash": user.id_value, "location": one.location.as_dict(),
                          "text": one.text, "prompt_tokens": one.num_tokens,
                          "truncated": one.truncated, **scored.get(one.location, {})})
    path = job.output_dir / PROMPTS_FILE
    write_bytes_atomic(path, b"".join(orjson.dumps(line) + b"\n" for line in lines))
    log.info("dry run: %d prompts of %d users in %s", len(lines), len(dataset.users), path)
    return path
