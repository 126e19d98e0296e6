"""One job's working state while an engine serves it: its users, collector, report and the
threads and workers that write and score its users as they finish."""
from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Sequence

from inference_core.data.records import Dataset, Location, SkippedItem, TestItem, UserRecord
from inference_core.report.prompt_texts import PromptTexts
from inference_core.run.collect import Collector, ItemResult
from inference_core.run.job import Job
from inference_core.run.prompting import BuildTally
from inference_core.run.writer import UserFileWriter
from inference_core.likelihood.collect import ScoreCollector, ScoredItem
from inference_core.rundir.layout import (HYDRA_DIR, LIKELIHOOD_KEY, UserFile, UserItem,
                                          user_file_of)
from inference_core.rundir.resume import claim_output_dir
from inference_core.rundir.writers import (SyncBatch, write_bytes_atomic, write_json_atomic,
                                           write_user_file as write_run_user_file)

if TYPE_CHECKING:
    from inference_core.evaluation.background import BackgroundScorer, KnownScores


def new_session_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class JobRun:
    """One job's working state while an engine serves it, possibly beside other jobs."""

    job: Job
    dataset: Dataset
    users: list[UserRecord]  # this shard's users still to generate
    resumed_users: int
    collector: Collector
    report: dict[str, Any]
    tally: BuildTally = field(default_factory=BuildTally)
    unfit: dict[str, list[SkippedItem]] = field(default_factory=dict)
    write_seconds: float = 0.0
    # This session's span for the job: the engine took its first request, its last completion
    # arrived (perf_counter); and the samples it kept.
    first_request: float | None = None
    last_completion: float = 0.0
    samples_kept: int = 0
    # Scores finished users while the run generates (large runs only); what it computed.
    scorer: BackgroundScorer | None = None
    known_scores: KnownScores | None = None
    # This session's id: every user file it writes and its entry in the shard report carry it,
    # so the merge can tell which recorded session made the samples on disk. Not part of the
    # run's identity (run.json): each resume is a new session of the same run.
    session: str = field(default_factory=new_session_id)
    # Where users' files go; None writes them in the calling thread.
    writer: UserFileWriter | None = None
    # The report page's prompts, decoded by the writer as users finish; None: no page.
    prompt_texts: PromptTexts | None = None
    # Why this job stopped while the others went on (its prompts could not be built); its
    # finished users are on disk, the rest is left to a rerun.
    failed: BaseException | None = None
    # The summary of a folder an earlier run finished, where no user is left: not touched.
    done_before: dict[str, Any] | None = None
    # The scoring requests and figures of a job that scores (mode likelihood or both).
    scores: ScoreCollector | None = None

    def claim(self) -> None:
        """The folder becomes this run's (claim_job_folder), and a holdout's derived test file
        is written into it."""
        claim_job_folder(self.job)
        if self.dataset.derived_test is not None:  # the merge fills this file, like any test file
            write_json_atomic(self.job.test_file, self.dataset.derived_test)
            self.dataset = replace(self.dataset, derived_test=None)

    def user(self, user_hash: str) -> UserRecord:
        return self.by_hash[user_hash]

    def user_complete(self, user_hash: str) -> bool:
        """Every item of the user generated and scored, as far as the job does each."""
        generated = not self.job.generates or self.collector.open_items.get(user_hash, 0) == 0
        scored = self.scores is None or self.scores.user_done(user_hash)
        return generated and scored

    def finish_user(self, user_hash: str) -> None:
        """A user every verb of the job is done with: written, then forgotten but for counts."""
        items = self.collector.user_items(user_hash) if self.job.generates else []
        self.write_user(user_hash, items, score=True)

    def write_user(self, user_hash: str, items: Sequence[ItemResult], score: bool = False,
                   ) -> None:
        """The user's file, from its full items (and their likelihood figures), handed to the
        writer; `score`: a finished user, whose items go to the background scorer once
        written."""
        scored = self.scores.user_items(user_hash) if self.scores is not None else {}
        done = user_file_for(self.job, self.user(user_hash), items,
                             self.unfit.get(user_hash, []), self.session, scored)
        prompts = (prompt_ids(user_hash, items, scored) if self.prompt_texts is not None else [])
        if score:  # the file holds the samples now: the run keeps only counts
            if self.job.generates:
                self.collector.release(user_hash)
            for item in scored.values():
                item.context_ids = None

        def write() -> None:
            start = time.perf_counter()
            write_run_user_file(self.job.output_dir, done, self.sync)
            if score and self.scorer is not None:
                self.scorer.add(done)
            if prompts and self.prompt_texts is not None:
                self.prompt_texts.add_users([prompts])
            self.write_seconds += time.perf_counter() - start

        if self.writer is not None:
            self.writer.put(write)
        else:
            write()

    def __post_init__(self) -> None:
        # User files are made durable in batches (a sync every 2 s), not with two fsyncs each.
        self.sync = SyncBatch(self.job.output_dir)
        self.by_hash = {u.user_hash: u for u in self.users}
        self.tests: dict[Location, TestItem] = {i.location: i for u in self.users for i in u.items}


def claim_job_folder(job: Job) -> None:
    """run.json (overwrite=true clears the folder first) and, for a job of a many-job command,
    the .hydra/ files its own command would have written."""
    claim_output_dir(job.output_dir, job.identity(), job.overwrite)
    for name, text in job.own_hydra_files.items():
        write_bytes_atomic(job.output_dir / HYDRA_DIR / name, text.encode("utf-8"))


def prompt_ids(user_hash: str, items: Sequence[ItemResult],
               scored: dict[Location, ScoredItem]) -> list[tuple[tuple[str, str], Any]]:
    """The report page's prompts of a user's items: generation's, else the scored context."""
    ids = {r.prompt.location: r.prompt.token_ids for r in items}
    for location, item in scored.items():
        if location not in ids and item.context_ids is not None:
            ids[location] = item.context_ids
    return [((user_hash, location.key()), token_ids) for location, token_ids in ids.items()]


def user_file_for(job: Job, user: UserRecord, items: Sequence[ItemResult],
                  unfit: Sequence[SkippedItem] = (), session: str | None = None,
                  scored: dict[Location, ScoredItem] | None = None) -> UserFile:
    """The user's file from its full items and their likelihood figures, naming the session
    that generated it (the merge's accounting)."""
    entries = {r.prompt.location: r.user_item() for r in items if r.full}
    for location, item in (scored or {}).items():
        if item.figures is None:
            continue
        if location in entries:
            entries[location] = replace(entries[location], extra={
                **entries[location].extra, LIKELIHOOD_KEY: item.figures})
        elif not job.generates:
            entries[location] = UserItem(location, item.prompt_tokens, item.truncated, (), (),
                                         (), item.reference, {LIKELIHOOD_KEY: item.figures})
    done = user_file_of(user.id_value, user.name, job.dataset_name, job.ablation.name,
                        job.model_name, list(entries.values()), session)
    if unfit:  # items that cannot be built: resume knows the user is done without them
        done = replace(done, extra={**done.extra,
                                    "skipped_items": [s.as_dict() for s in unfit]})
    return done


def start_scoring(run: JobRun, merge: bool, held: ExitStack) -> None:
    """Score users as they finish, where this process also scores the run afterwards."""
    # Imported here: the metrics' libraries load only for runs that evaluate.
    from inference_core.evaluation.background import start_background_scorer

    job = run.job
    if job.evaluate and merge and job.shard_count == 1 and job.generates:
        items = sum(len(u.items) for u in run.users)
        run.scorer = start_background_scorer(job.language, items)
        if run.scorer is not None:
            held.callback(run.scorer.close)


def collect_scores(run: JobRun) -> None:
    if run.scorer is not None:
        start = time.perf_counter()
        run.known_scores = run.scorer.collect()
        run.report["scoring_wait_seconds"] = time.perf_counter() - start
