"""The engine loads in a thread of its own from the moment a command starts, beside the data load
and prompt building (weights and CUDA graphs take a minute or more on a GPU; nothing needs to
wait for the other). One start serves every job of the command: its `engine_session`.
"""
from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import replace
from typing import Any, Callable, Sequence

from inference_core.engine import Engine
from inference_core.model.adapters import Adapter
from inference_core.run.job import Job
from inference_core.run.job_list import session_engine_cfg

log = logging.getLogger(__name__)

StartEngine = Callable[[Job, Sequence[Adapter]], Engine]
# How often a waiting main thread looks up (it stays responsive to signals meanwhile).
WAIT_SLICE_SECONDS = 0.5


class EngineLaunch:
    """One engine start for `jobs`, begun at construction; `wait()` hands the engine over."""

    def __init__(self, start: StartEngine, jobs: Sequence[Job]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.jobs = [str(job.output_dir) for job in jobs]
        # The widest window any job needs; each job budgets its own prompts.
        job = replace(jobs[0], engine_cfg=session_engine_cfg(jobs))
        adapters = list({j.adapter.path: j.adapter for j in jobs if j.adapter}.values())
        self._engine: Engine | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(start, job, adapters),
                                        name="engine-start", daemon=True)
        self._thread.start()

    def _start(self, start: StartEngine, job: Job, adapters: list[Adapter]) -> None:
        try:
            self._engine = start(job, adapters)
        except BaseException as err:  # noqa: BLE001 - raised in the waiting thread
            self._error = err

    @property
    def starting(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> Engine:
        """The started engine, once it is up; its start's error, raised here."""
        while self._thread.is_alive():
            self._thread.join(WAIT_SLICE_SECONDS)
        if self._error is not None:
            raise self._error
        assert self._engine is not None
        return self._engine

    def session(self) -> dict[str, Any]:
        """What every summary served by this start records."""
        load = self._engine.load_seconds if self._engine is not None else None
        return {"id": self.id, "jobs": self.jobs,
                "load_seconds": round(load, 3) if load is not None else None}

    def close(self) -> None:
        """Close the engine if it is up. One still starting is left to the engine reaper (the
        caller abandons it): waiting minutes for an engine nobody will use helps no one."""
        if self._engine is not None:
            self._engine.close()
        elif self.starting:
            log.info("engine start abandoned: no job needs it")
