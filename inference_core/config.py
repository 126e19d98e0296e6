"""From the composed Hydra config to typed settings, and the checks made before a model loads."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from omegaconf import DictConfig, ListConfig, OmegaConf

from inference_core.data.loader import TEST_FILE, TRAIN_FILE
from inference_core.engine import SamplingSettings
# ConfigError lives below every module that raises it; imported from here by many.
from inference_core.errors import ConfigError
from inference_core.prompts.builder import Ablation
from inference_core.prompts.settings import PromptConfigError, PromptSettings, settings_from_config

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
# The repository folder: relative defaults in conf/ (data/, outputs/, .cache/) are relative to it.
PROJECT_ROOT = Path(CONF_DIR).parent
# Any of these makes a folder loadable by AutoTokenizer (fast, slow or SentencePiece tokenizers).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
LANGUAGES = ("en", "zh", "ja")  # what the metrics know how to tokenize


def group_choices(group: str) -> list[str]:
    """The choices of a config group (`conf/<group>/*.yaml`), sorted."""
    return sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml"))


def register_resolvers() -> None:
    """`${basename:PATH[,DEFAULT]}` names runs after their checkpoint or data folder;
    `${root:data/Chameleons}` is that path under the repository folder, wherever the command runs;
    `${abspath:PATH}` makes a path typed on the command line absolute against the cwd;
    `${command_dir:ONE,ABLATIONS,DATASETS,MANY}` is where Hydra writes a command's .hydra/ and
    run.log: a single job's output_dir (ONE), or, for a command of many jobs, MANY (each job's
    folder then gets its own .hydra/ when it is claimed)."""
    OmegaConf.register_new_resolver(
        "basename", lambda p, default="none": Path(str(p).rstrip("/")).name if p else default,
        replace=True)
    OmegaConf.register_new_resolver("root", lambda p="": str(PROJECT_ROOT / str(p)), replace=True)
    OmegaConf.register_new_resolver("abspath", lambda p: absolute(str(p)), replace=True)
    # A likelihood (or both) run keeps its own folder beside the generation run's.
    OmegaConf.register_new_resolver(
        "mode_folder", lambda mode: "" if mode in (None, "generate") else f"-{mode}",
        replace=True)
    OmegaConf.register_new_resolver(
        "command_dir", lambda one, ablations, datasets, many:
        one if ablations is None and datasets is None else many, replace=True)


def sampling_settings(cfg: DictConfig) -> SamplingSettings:
    s = cfg.sampling
    return SamplingSettings(
        num_samples=int(s.num_samples), temperature=float(s.temperature), top_p=float(s.top_p),
        top_k=int(s.top_k), max_tokens=int(s.max_tokens), seed=int(s.seed),
        min_tokens=int(s.get("min_tokens", 1)),
        stop=prompt_settings(cfg).stop_strings(tuple(cfg.dataset.get("stop") or ())),
        repetition_penalty=float(s.get("repetition_penalty", 1.0)))


def ablation(cfg: DictConfig) -> Ablation:
    a = cfg.ablation
    return Ablation(str(a.name), bool(a.profile), bool(a.history), bool(a.context))


def dataset_language(cfg: DictConfig) -> str:
    """`dataset.language`: en (whitespace words), zh (characters) or ja (janome words); unset,
    DMSC means zh."""
    from inference_core.evaluation.metrics import language_for_dataset

    language = cfg.dataset.get("language") or language_for_dataset(str(cfg.dataset.name))
    if language not in LANGUAGES:
        raise ConfigError(f"dataset.language={language!r}: choose one of {', '.join(LANGUAGES)}")
    return str(language)


def dataset_scorer(cfg: DictConfig) -> str:
    """`dataset.scorer` (text, rating, choice; unset means text), checked against the registry."""
    from inference_core.evaluation.scorers import DEFAULT_SCORER, scorer_names

    scorer = cfg.dataset.get("scorer") or DEFAULT_SCORER
    if scorer not in scorer_names():
        raise ConfigError(f"dataset.scorer={scorer!r}: choose one of {', '.join(scorer_names())}")
    return str(scorer)


def output_handlers(cfg: DictConfig) -> tuple[tuple[str, ...], dict[str, Any]]:
    """`dataset.output_handler` names (null, a name or a list) and their options, checked by
    building the handler once (unknown names and bad options are a ConfigError here)."""
    from inference_core.outputs import as_names, make_output_handler

    raw = cfg.dataset.get("output_handler")
    names = as_names(OmegaConf.to_container(raw) if isinstance(raw, DictConfig | ListConfig)
                     else raw)
    options = cfg.dataset.get("output_handler_options") or {}
    options = OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) \
        else dict(options)
    make_output_handler(names, options)
    return names, options


def prompt_settings(cfg: DictConfig) -> PromptSettings:
    """The `prompt` group (default native) merged with the dataset's `prompt` sections."""
    try:
        fmt = OmegaConf.to_container(cfg.prompt, resolve=True)
        dataset_prompt = cfg.dataset.get("prompt")
        dataset_prompt = (OmegaConf.to_container(dataset_prompt, resolve=True)
                          if isinstance(dataset_prompt, DictConfig) else dataset_prompt)
        kwargs = cfg.model.get("chat_template_kwargs") if cfg.get("model") else None
        kwargs = OmegaConf.to_container(kwargs, resolve=True) if isinstance(kwargs, DictConfig) else kwargs
        return settings_from_config(fmt, dataset_prompt, kwargs)
    except PromptConfigError as err:
        raise ConfigError(str(err)) from None


@dataclass(frozen=True)
class ModelFacts:
    """What config.json says about the checkpoint (read without loading any weights)."""

    max_position_embeddings: int | None
    num_attention_heads: int | None
    # RoPE scaling stretches the window beyond max_position_embeddings: vLLM works that out.
    rope_scaling: bool = False
    vocab_size: int | None = None

    @classmethod
    def read(cls, model_path: Path) -> "ModelFacts":
        data = orjson.loads((model_path / "config.json").read_bytes())
        text = data.get("text_config") or data  # multimodal checkpoints nest the LM's config
        scaling = text.get("rope_scaling") or (text.get("rope_parameters") or {}).get("rope_type",
                                                                                       "default")
        return cls(text.get("max_position_embeddings"), text.get("num_attention_heads"),
                   scaling not in (None, "default"), text.get("vocab_size"))


def gpu_count() -> int:
    """The GPUs CUDA would show this process, counted by the driver: CUDA stays untouched here,
    since this runs in the process that starts vLLM (inference_core/gpu_node.py)."""
    from inference_core.gpu_node import visible_gpus

    return len(visible_gpus())


def check_data_folder(cfg: DictConfig) -> Path:
    folder = Path(str(cfg.dataset.path)).resolve()
    missing = [f for f in (TRAIN_FILE, TEST_FILE) if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"dataset.path={folder} lacks {' and '.join(missing)}")
    return folder


def check_model_folder(path: str) -> Path:
    folder = Path(path).expanduser().resolve()
    if not folder.exists() and HUB_ID.fullmatch(path):
        name = path.split("/")[1]
        raise ConfigError(
            f"model.path={path} is not a local folder and looks like a Hugging Face hub id: only "
            f"local folders work (no downloads at run time); on a machine with network run "
            f"`huggingface-cli download {path} --local-dir /ckpt/{name}`, then model.path=/ckpt/{name}")
    if not (folder / "config.json").is_file():
        what = "does not exist" if not folder.exists() else "has no config.json"
        raise ConfigError(f"model.path={folder} {what}")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(f"model.path={folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}"
                          f"): copy them from the checkpoint's base model folder")
    return folder


def sampling_value(s: DictConfig, key: str, whole: bool = False) -> float:
    """`sampling.<key>` as a finite number (a whole one where `whole`), or one line naming it."""
    value = s.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or (whole and not number.is_integer()):
        raise ConfigError(f"sampling.{key}={value!r} is not a {'whole ' if whole else ''}number")
    return number


def check_sampling(cfg: DictConfig, max_model_len: int) -> None:
    """The ranges vLLM's SamplingParams accepts (its _verify_args), checked before any load; the
    other engines take the same values with the same meaning."""
    s = cfg.sampling
    sampling_value(s, "seed", True)  # any whole number seeds every engine
    n = sampling_value(s, "num_samples", True)
    temperature, top_p = sampling_value(s, "temperature"), sampling_value(s, "top_p")
    top_k = sampling_value(s, "top_k", True)
    max_tokens = sampling_value(s, "max_tokens", True)
    min_tokens = sampling_value(s, "min_tokens", True) if "min_tokens" in s else 1
    penalty = sampling_value(s, "repetition_penalty") if "repetition_penalty" in s else 1.0
    retries = sampling_value(s, "blank_retries", True) if "blank_retries" in s else 0
    problem = next((line for bad, line in (
        (n < 1, f"sampling.num_samples={s.num_samples} must be at least 1"),
        (not 0 <= temperature <= 2, f"sampling.temperature={s.temperature} must be in [0, 2] "
                                    f"(0 is greedy)"),
        (temperature == 0 and n > 1, "sampling.temperature=0 (greedy) gives one sample: set "
                                     "sampling.num_samples=1"),
        (not 0 < top_p <= 1, f"sampling.top_p={s.top_p} must be in (0, 1]"),
        (top_k < -1, f"sampling.top_k={s.top_k} must be -1 or 0 (off), or at least 1"),
        (penalty <= 0, f"sampling.repetition_penalty={penalty:g} must be above 0 (1 is off)"),
        (max_tokens < 1, f"sampling.max_tokens={s.max_tokens} must be at least 1"),
        (max_tokens >= max_model_len, f"sampling.max_tokens={s.max_tokens} leaves no room for a "
                                      f"prompt in max_model_len={max_model_len}"),
        (not 0 <= min_tokens <= max_tokens, f"sampling.min_tokens={min_tokens:g} must be in "
                                            f"[0, sampling.max_tokens={max_tokens:g}]"),
        (retries < 0, f"sampling.blank_retries={retries:g} must be 0 or more"),
    ) if bad), None)
    if problem:
        raise ConfigError(problem)


def check_parallelism(engine_cfg: Any, facts: ModelFacts) -> None:
    tp = int(engine_cfg.get("tensor_parallel_size") or 1)
    pp = int(engine_cfg.get("pipeline_parallel_size") or 1)
    dp = int(engine_cfg.get("data_parallel_size") or 1)
    if min(tp, pp, dp) < 1:
        raise ConfigError(f"engine.tensor_parallel_size={tp}, pipeline_parallel_size={pp} and "
                          f"data_parallel_size={dp} must each be at least 1")
    wanted = tp * pp * dp
    have = gpu_count() if wanted > 1 else 0
    # Without GPUs data-parallel replicas are CPU processes; only TP/PP need devices.
    if (have == 0 and tp * pp > 1) or (have > 0 and wanted > have):
        raise ConfigError(f"engine.tensor_parallel_size={tp} x pipeline_parallel_size={pp} x "
                          f"data_parallel_size={dp} needs {wanted} GPUs; "
                          f"{have} found (CUDA_VISIBLE_DEVICES limits what is seen)")
    if facts.num_attention_heads and facts.num_attention_heads % tp:
        raise ConfigError(f"engine.tensor_parallel_size={tp} does not divide the model's "
                          f"{facts.num_attention_heads} attention heads")


def effective_max_model_len(cfg: DictConfig, facts: ModelFacts) -> int:
    value = cfg.engine.get("max_model_len") or facts.max_position_embeddings
    if not value:
        raise ConfigError("engine.max_model_len is unset and the model's config.json has no "
                          "max_position_embeddings: set engine.max_model_len")
    window = facts.max_position_embeddings
    if window and int(value) > window and not facts.rope_scaling:
        raise ConfigError(f"engine.max_model_len={value} is beyond the model's window "
                          f"(max_position_embeddings={window} in its config.json): set "
                          f"model.max_model_len={window} or less")
    return int(value)


def absolute(path: str) -> str:
    """Spawned engine workers do not share our cwd assumptions: hand them absolute paths."""
    return str(Path(os.path.expanduser(path)).resolve())
