"""LoRA adapters: which base checkpoint an adapter needs, and many adapters served by one engine.

An adapter folder holds `adapter_config.json` (peft's format); its `base_model_name_or_path`
often names a path on the cluster where it was trained, so `model.base_path` stands in for it
when that path does not exist here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from omegaconf import DictConfig, OmegaConf

from inference_core.config import ConfigError, group_choices

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Adapter:
    path: Path
    rank: int
    base: Path
    # Where the base came from: "adapter_config.json" or "model.base_path".
    base_from: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "rank": self.rank, "base": str(self.base),
                "base_from": self.base_from}


@dataclass(frozen=True)
class AdapterPair:
    """One adapter and the (ablation, dataset) it serves, written under model name `name`."""

    path: Path
    name: str
    ablation: str
    dataset: str


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file()


def is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_adapter_folder(path: Path) -> bool:
    """A folder of adapters (one per subfolder) rather than a checkpoint or one adapter."""
    return (path.is_dir() and not is_checkpoint(path) and not is_adapter(path)
            and any(is_adapter(p) for p in path.iterdir()))


def read_adapter(path: Path, base_path: str | None) -> Adapter:
    """The adapter at `path` and its base: adapter_config.json's, else model.base_path."""
    try:
        settings = orjson.loads((path / ADAPTER_CONFIG).read_bytes())
    except orjson.JSONDecodeError as err:
        raise ConfigError(f"{path / ADAPTER_CONFIG}: not valid JSON ({err})") from None
    if not isinstance(settings.get("r"), int):
        raise ConfigError(f"{path / ADAPTER_CONFIG}: field 'r' (the LoRA rank) must be an integer")
    named = settings.get("base_model_name_or_path")
    if named and is_checkpoint(Path(named).expanduser()):
        return Adapter(path, settings["r"], Path(named).expanduser().resolve(), ADAPTER_CONFIG)
    if base_path and is_checkpoint(Path(base_path).expanduser()):
        return Adapter(path, settings["r"], Path(base_path).expanduser().resolve(), "model.base_path")
    raise ConfigError(
        f"LoRA adapter {path}: its base checkpoint {named!r} (adapter_config.json "
        f"base_model_name_or_path) is not a checkpoint folder here, and model.base_path="
        f"{base_path!r} is not either: set model.base_path to the base model's folder")


def adapter_pairs(cfg: DictConfig) -> list[AdapterPair]:
    """The (adapter, ablation, dataset) pairs of a many-adapter run; empty for a one-model run.

    `model.adapters` (or `model.path`) is either a folder whose subfolders are adapters (named after the ablation
    they serve, else serving the run's ablation; written under the folder's name), or a mapping
    `{name: path}` / `{name: {path, ablation, dataset}}` (written under model name `name`).
    """
    spec = cfg.model.get("adapters")
    if not spec and cfg.model.path and is_adapter_folder(Path(str(cfg.model.path)).expanduser()):
        spec = str(cfg.model.path)
    if not spec:
        return []
    run_ablation, run_dataset = str(cfg.ablation.name), str(cfg.dataset.name)
    if isinstance(spec, str):
        return _folder_pairs(Path(spec).expanduser().resolve(), run_ablation, run_dataset)
    pairs = []
    for name, entry in OmegaConf.to_container(spec, resolve=True).items():
        entry = {"path": entry} if isinstance(entry, str) else dict(entry or {})
        if not entry.get("path"):
            raise ConfigError(f"model.adapters.{name}: give the adapter's folder as path")
        pairs.append(AdapterPair(_adapter_folder(Path(str(entry["path"])), f"model.adapters.{name}"),
                                 str(entry.get("name", name)),
                                 str(entry.get("ablation") or run_ablation),
                                 str(entry.get("dataset") or run_dataset)))
    return pairs


def _adapter_folder(path: Path, where: str) -> Path:
    folder = path.expanduser().resolve()
    if not is_adapter(folder):
        what = "does not exist" if not folder.exists() else f"has no {ADAPTER_CONFIG}"
        raise ConfigError(f"{where}={folder} {what}")
    return folder


def _folder_pairs(folder: Path, run_ablation: str, run_dataset: str) -> list[AdapterPair]:
    subfolders = sorted(p for p in folder.iterdir() if is_adapter(p)) if folder.is_dir() else []
    if not subfolders:
        raise ConfigError(f"model.adapters={folder}: no subfolder holds an {ADAPTER_CONFIG}")
    ablations = group_choices("ablation")
    return [AdapterPair(p, folder.name, p.name if p.name in ablations else run_ablation, run_dataset)
            for p in subfolders]


def pair_config(cfg: DictConfig, pair: AdapterPair) -> DictConfig:
    """The config a separate run of this adapter would have: the same command line (experiment
    and local config included), with this pair's adapter, name, ablation and dataset."""
    from inference_core.compose import recompose

    for group, choice in (("ablation", pair.ablation), ("dataset", pair.dataset)):
        if choice not in group_choices(group):
            raise ConfigError(f"model.adapters: unknown {group} '{choice}'; "
                              f"choices: {', '.join(group_choices(group))}")
    return recompose(cfg, [f"ablation={pair.ablation}", f"dataset={pair.dataset}",
                           f"model.path={pair.path}", "model.adapters=null",
                           f"model.name={pair.name}"])
