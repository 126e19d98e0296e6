"""One job's failure in a seven-job command (its prompts, its metrics, its report) stops that job
alone: the six others finish exactly as their separate runs do, the failed one is named in one
line with its folder and exit code, and running the command again finishes only the failed job.
Through the fake engine (tests only); the torchrun variant is in test_hf_pipeline.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
from jinja2.exceptions import UndefinedError

from conftest import DATA, compose
from fake_engine import FakeEngine, lend
from inference_core.cli import run_outcome
from inference_core.evaluation import scoring
from inference_core.prompts.builder import PromptBuilder
from inference_core.report import page
from test_one_engine_start import ABLATIONS, TINY, folder_contents, jobs_of
from inference_core.run.pipeline import run_job
from test_vllm_pipeline import assert_complete_run

FAILING = "history_only"
COMMAND = ["ablations=all", *TINY[:2]]  # metrics and the report on: both can fail


def command(root: Path) -> Any:
    return compose(f"output_dir={root}/${{ablation.name}}", *COMMAND)


@pytest.fixture(scope="module")
def separate_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each of the seven jobs run on its own, as the reference."""
    root = tmp_path_factory.mktemp("apart")
    for job in jobs_of(root, "ablations=all", "evaluate=true", "report=true"):
        run_job(job, lend(FakeEngine()))
    return root


def break_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PromptBuilder.build_user

    def build_user(self: PromptBuilder, user: Any) -> Any:
        if self.ablation.name == FAILING and user.user_hash == sorted_users()[1]:
            raise UndefinedError("'nothing' is undefined")
        return real(self, user)

    monkeypatch.setattr(PromptBuilder, "build_user", build_user)


def sorted_users() -> list[str]:
    from inference_core.data.loader import load_dataset

    return [u.user_hash for u in load_dataset("Chameleons", DATA / "Chameleons").users]


def break_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    real = scoring.evaluate_run

    def evaluate_run(run_dir: Path, *args: Any) -> Any:
        if Path(run_dir).name == FAILING:
            raise ZeroDivisionError("a scorer's bug")
        return real(run_dir, *args)

    monkeypatch.setattr(scoring, "evaluate_run", evaluate_run)


def break_report(monkeypatch: pytest.MonkeyPatch) -> None:
    real = page.write_report

    def write_report(run_dir: Path, **kwargs: Any) -> Any:
        if Path(run_dir).name == FAILING:
            raise OSError(28, "No space left on device")
        return real(run_dir, **kwargs)

    monkeypatch.setattr(page, "write_report", write_report)


@pytest.mark.parametrize("inject, code, says", [
    (break_prompts, 2, "building the prompts of user"),
    (break_metrics, 1, "ZeroDivisionError: a scorer's bug"),
    (break_report, 75, "report.html could not be written"),
], ids=["prompts", "metrics", "report"])
@pytest.mark.slow
def test_one_jobs_failure_stops_only_that_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        separate_runs: Path, inject: Callable[[pytest.MonkeyPatch], None], code: int,
        says: str) -> None:
    with monkeypatch.context() as broken:
        inject(broken)
        got, reason = run_outcome(command(tmp_path), lend(FakeEngine()))
    failed = tmp_path / FAILING
    assert got == code
    assert reason.startswith("1 of 7 jobs failed") and f"{failed}: " in reason and says in reason
    named = [r.getMessage() for r in caplog.records
             if r.levelname == "ERROR" and r.getMessage().startswith(f"{failed}: ")]
    assert named and all("\n" not in line for line in named)
    others = [a for a in ABLATIONS if a != FAILING]
    for ablation in others:
        assert_complete_run(tmp_path / ablation, DATA / "Chameleons" / "test_leaderboard.json", 2)
        assert folder_contents(tmp_path / ablation) == folder_contents(separate_runs / ablation)
    before = {p: p.read_bytes() for a in others for p in (tmp_path / a).rglob("*")
              if p.is_file() and not p.name.endswith(".lock")}

    engine = FakeEngine()
    assert run_outcome(command(tmp_path), lend(engine)) == (0, "")
    # Only the failed job's missing users were generated, and only its folder changed.
    assert {r.request_id.split("/")[0] for r in engine.requests} <= {"0"}
    assert before == {p: p.read_bytes() for p in before}
    assert_complete_run(failed, DATA / "Chameleons" / "test_leaderboard.json", 2)
    assert folder_contents(failed)["test_leaderboard.json"] == folder_contents(
        separate_runs / FAILING)["test_leaderboard.json"]
    assert (failed / "metrics.json").is_file() and (failed / "report.html").is_file()
