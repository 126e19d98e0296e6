"""The composed Hydra config outside a `@hydra.main` run: benches, compare, adapter pairs, tests.

The command line's overrides are kept with the config (`hydra.overrides.task`, as Hydra records
them) so that code which must compose a sibling config, such as one LoRA adapter's own run,
starts again from exactly what the user typed.
"""
from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from inference_core.config import CONF_DIR, register_resolvers


def compose_config(*overrides: str, config_name: str = "config") -> DictConfig:
    """The config `python -m inference_vllm OVERRIDES...` would run with."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose beside it
        cfg = compose(config_name=config_name, overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
    with open_dict(cfg):  # escaped: an override's ${...} stays text here, as the user typed it
        cfg.hydra = {"overrides": {"task": [o.replace("${", "\\${") for o in overrides]}}
    return cfg


def command_line_overrides(cfg: DictConfig) -> list[str]:
    """The overrides `cfg` was composed from: Hydra's record inside an app, else compose_config's."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return typed_overrides()
    recorded = OmegaConf.select(cfg, "hydra.overrides.task", default=None)
    return list(recorded) if recorded is not None else []


def typed_overrides() -> list[str]:
    """This Hydra job's overrides as typed: `output_dir=runs/${ablation.name}` keeps its
    interpolation (reading Hydra's record plainly would resolve it against this job's config)."""
    from hydra.core.hydra_config import HydraConfig

    return [str(o) for o in OmegaConf.to_container(HydraConfig.get().overrides.task,
                                                   resolve=False)]


def recompose(cfg: DictConfig, replaced: Sequence[str]) -> DictConfig:
    """`cfg`'s own command line with `replaced` ("key=value") instead of the same keys there."""
    keys = {r.split("=", 1)[0].lstrip("+~") for r in replaced}
    kept = [o for o in command_line_overrides(cfg) if o.split("=", 1)[0].lstrip("+~") not in keys]
    return compose_config(*kept, *replaced)


def engine_settings(name: str, max_model_len: int) -> dict:
    """conf/engine/<name>.yaml as plain settings, for tools that run a second engine beside the
    job's own (compare, bench); the window is the job's."""
    cfg = OmegaConf.to_container(compose_config(f"engine={name}").engine, resolve=True)
    cfg["max_model_len"] = max_model_len
    return cfg
