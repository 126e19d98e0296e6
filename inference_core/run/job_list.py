"""Which jobs one command runs: one, or every (dataset, ablation) of `datasets=` x `ablations=`, or
every LoRA adapter pair; all of them served by one engine start.

Each job's config is the one its own command would compose (the same command line with this job's
`dataset=`/`experiment=` and `ablation=`), so each writes the folder a separate run writes: the
same files, run.json, .hydra/config.yaml and overrides.yaml, prompts and seeds. Not the same: what
says when and how it ran (timings, session ids, `engine_session` naming every job of the start and
its rate), the command's own log and .hydra/hydra.yaml (under multirun/, not in a job's folder),
and, where the engine's numerics depend on what shares a batch (bf16 on a GPU), a rare sample.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from inference_core.config import ConfigError, group_choices

ALL = "all"
# Keys a job of a shared engine start may set for itself; every other engine setting is the
# start's own, so it must be the same for all jobs.
PER_JOB_ENGINE_KEYS = ("max_model_len",)


def named_list(cfg: DictConfig, key: str) -> list[str]:
    """`ablations=`/`datasets=` as a list of names: null is [], `all` every ablation."""
    value = cfg.get(key)
    if value is None:
        return []
    if isinstance(value, ListConfig):
        names = [str(v) for v in OmegaConf.to_container(value, resolve=True)]
    elif key == "ablations" and str(value) == ALL:
        names = group_choices("ablation")
    else:
        names = [str(value)]
    if not names:
        raise ConfigError(f"{key}=[]: name at least one, or leave {key} unset (null)")
    if len(set(names)) < len(names):
        raise ConfigError(f"{key}={names}: a name is given twice")
    return names


def ablation_overrides(cfg: DictConfig) -> list[list[str]]:
    choices = group_choices("ablation")
    names = named_list(cfg, "ablations")
    for name in names:
        if name not in choices:
            raise ConfigError(f"ablations: unknown ablation '{name}'; choices: {ALL}, "
                              f"{', '.join(choices)}")
    return [[f"ablation={name}"] for name in names] or [[]]


def dataset_overrides(cfg: DictConfig) -> list[list[str]]:
    """A dataset name composes `dataset=<name>`; an experiment file's name composes that
    experiment (its dataset, sampling preset, prompt format and window)."""
    datasets, experiments = group_choices("dataset"), group_choices("experiment")
    overrides = []
    for name in named_list(cfg, "datasets"):
        if name in datasets:
            overrides.append([f"dataset={name}"])
        elif name in experiments:
            overrides.append([f"experiment={name}"])
        else:
            raise ConfigError(f"datasets: '{name}' is neither a dataset ({', '.join(datasets)}) "
                              f"nor an experiment ({', '.join(experiments)})")
    return overrides or [[]]


def job_configs(cfg: DictConfig) -> list[DictConfig]:
    """The config of every job of `datasets` x `ablations` (dataset-major); [cfg] when unset."""
    from inference_core.compose import recompose

    if cfg.get("ablations") is None and cfg.get("datasets") is None:
        return [cfg]
    return [recompose(cfg, [*d, *a, "ablations=null", "datasets=null"])
            for d in dataset_overrides(cfg) for a in ablation_overrides(cfg)]


def check_distinct_folders(jobs: Sequence[Any], what: str) -> None:
    """Two jobs in one folder would overwrite each other's users: refused before any load."""
    folders: dict[Path, Any] = {}
    for job in jobs:
        if job.output_dir in folders:
            raise ConfigError(
                f"{what}: {describe(folders[job.output_dir])} and {describe(job)} would both "
                f"write to {job.output_dir}; keep dataset.name, model.name and ablation.name in "
                f"output_dir (its default does)")
        folders[job.output_dir] = job


def describe(job: Any) -> str:
    adapter = f" (adapter {job.adapter.path})" if job.adapter else ""
    return f"dataset={job.dataset_name} ablation={job.ablation.name}{adapter}"


def check_one_engine(jobs: Sequence[Any]) -> None:
    """Jobs of one engine start need one base model and the same engine settings."""
    bases = {job.model_path for job in jobs}
    if len(bases) > 1:
        raise ConfigError(f"one engine start serves one base model; these jobs need {len(bases)}: "
                          f"{', '.join(sorted(map(str, bases)))}")
    first = jobs[0]
    for job in jobs[1:]:
        differ = sorted(k for k in first.engine_cfg.keys() | job.engine_cfg.keys()
                        if k not in PER_JOB_ENGINE_KEYS
                        and first.engine_cfg.get(k) != job.engine_cfg.get(k))
        if differ:
            raise ConfigError(
                f"one engine start serves every job, but {describe(job)} sets engine."
                f"{differ[0]}={job.engine_cfg.get(differ[0])!r} where {describe(first)} has "
                f"{first.engine_cfg.get(differ[0])!r}: run them as separate commands")


def session_engine_cfg(jobs: Sequence[Any]) -> dict[str, Any]:
    """The shared start's settings: the jobs' own, with the widest window any of them needs
    (each job still budgets its prompts to its own), and which verbs the jobs need
    (`scores`, `generates`: an engine sizes a scoring step's logits by them)."""
    return {**jobs[0].engine_cfg,
            "max_model_len": max(int(job.engine_cfg["max_model_len"]) for job in jobs),
            "scores": any(job.scores for job in jobs),
            "generates": any(job.generates for job in jobs)}
