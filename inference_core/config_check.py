"""The command line and the composed config, checked before Hydra runs a job or a model loads.

Every mistake becomes one line naming the key and how to fix it (ConfigError, exit code 2):
Hydra's own override errors, keys that are not in our config groups (nearest key suggested),
`engine.<name>` that is not a vLLM engine argument, and required values (`???`) left unset.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from inference_core.config import CONF_DIR, ConfigError, register_resolvers

# Keys whose contents are free-form (passed through to a library or a chat template).
FREE_FORM = frozenset({"engine.extra", "model.chat_template_kwargs", "model.adapters",
                       "engine.speculative_config", "engine.extra_body"})
# Groups whose files write anywhere in the config (`# @package _global_`).
GLOBAL_GROUPS = ("experiment", "debug", "local")
# What to put in place of a required value in the suggested fix.
EXAMPLE_VALUES = {"model.path": "/path/to/checkpoint", "dataset.path": "/path/to/dataset_folder"}
HYDRA_ONLY_FLAGS = ("help", "hydra_help", "info", "shell_completion", "version")


@dataclass(frozen=True)
class CommandLine:
    """What Hydra's own argument parser makes of argv."""

    overrides: tuple[str, ...]
    multirun: bool
    config_name: str
    # --help, --info, ...: Hydra answers those itself and runs no job.
    runs_no_job: bool


def parse_command_line(argv: Sequence[str], config_name: str) -> CommandLine:
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    return CommandLine(tuple(args.overrides), bool(args.multirun),
                       args.config_name or config_name,
                       any(getattr(args, flag, None) for flag in HYDRA_ONLY_FLAGS))


def check_command_line(argv: Sequence[str], config_name: str = "config") -> None:
    """Compose every job the command line asks for and check it; raises ConfigError."""
    command = parse_command_line(argv, config_name)
    if command.runs_no_job:
        return
    register_resolvers()
    for overrides in job_overrides(command):
        cfg = compose_or_explain(command.config_name, overrides)
        where = f" (sweep job {' '.join(overrides)})" if command.multirun else ""
        try:
            check_config(cfg, dict(cfg.hydra.runtime.choices), command.config_name)
        except ConfigError as err:
            raise ConfigError(f"{err}{where}") from None


def job_overrides(command: CommandLine) -> list[list[str]]:
    """The overrides of each job: one job, or every point of a sweep (as Hydra expands it)."""
    if not command.multirun:
        return [list(command.overrides)]
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(CONF_DIR))
    try:  # glob(*) needs the loader to list a group's options
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(
            list(command.overrides))
    except Exception as err:  # noqa: BLE001 - Hydra's parse errors have no common base we need
        raise ConfigError(f"cannot parse the overrides: {first_line(err)}") from None
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides),
                             return_hydra_config=True)


def compose_or_explain(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """The composed config, or Hydra's refusal turned into one line with the fix."""
    from hydra.errors import HydraException

    try:
        return compose(config_name, overrides)
    except HydraException as err:
        raise ConfigError(explain_composition_error(str(err), config_name, overrides)) from None


def explain_composition_error(message: str, config_name: str, overrides: Sequence[str]) -> str:
    if match := re.match(r"Could not override '([^']+)'", message):
        return explain_unknown_override(match.group(1), config_name, overrides)
    if match := re.match(r"Could not append to config. An item is already at '([^']+)'", message):
        key = match.group(1)
        value = override_value(overrides, key)
        return (f"{key} is already in the config: drop the + ({key}={value}), or write "
                f"++{key}={value} to set it whether or not the config has it")
    if match := re.match(r"Ambiguous value for argument '([^']+)'", message):
        return (f"{match.group(1)} is a list of values: add -m to sweep over them, or quote the "
                f"value to keep it as one string (key='a,b')")
    return first_line(message)


def explain_unknown_override(key: str, config_name: str, overrides: Sequence[str]) -> str:
    """`sampling.temprature=0.5`: name the nearest existing key (composed without that override)."""
    others = [o for o in overrides if override_key(o) != key]
    value = override_value(overrides, key)
    parent, _, leaf = key.rpartition(".")
    try:
        cfg = compose(config_name, others)
        siblings = OmegaConf.select(cfg, parent) if parent else cfg
    except Exception:  # noqa: BLE001 - the suggestion is a bonus; the error line stands without it
        siblings = None
    names = list(siblings.keys()) if isinstance(siblings, DictConfig) else []
    if close := difflib.get_close_matches(leaf, names, n=1):
        fixed = f"{parent}.{close[0]}" if parent else close[0]
        return f"{key} is not a setting: did you mean {fixed}? ({fixed}={value})"
    if parent in FREE_FORM or (isinstance(siblings, DictConfig) and not names):
        return f"{key} is not in the config yet: add it with +{key}={value}"
    return f"{key} is not a setting{settings_list(parent, names)}"


def settings_list(parent: str, names: Sequence[str]) -> str:
    return f"; {parent or 'the config'} has: {', '.join(map(str, names))}" if names else ""


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def override_value(overrides: Sequence[str], key: str) -> str:
    for override in overrides:
        if override_key(override) == key and "=" in override:
            return override.split("=", 1)[1]
    return "VALUE"


def first_line(message: object) -> str:
    return str(message).strip().splitlines()[0] if str(message).strip() else repr(message)


def check_config(cfg: DictConfig, choices: Mapping[str, str | None], config_name: str = "config"
                 ) -> None:
    """Required values, unknown keys and unresolvable values of a composed config."""
    # Hydra's own section interpolates runtime values that only exist inside a running job.
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    check_required(body, choices)
    for line in unknown_keys(body, choices, config_name):
        raise ConfigError(line)
    try:
        OmegaConf.to_container(body, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{getattr(err, 'full_key', '') or 'config'}: {first_line(err)}") from None


def check_required(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    missing = list(missing_paths(cfg, ""))
    if missing:
        key = missing[0]
        example = EXAMPLE_VALUES.get(key, "VALUE")
        raise ConfigError(f"{key} is required with {chosen_by(key, choices)}: add {key}={example}")


def missing_paths(node: DictConfig, prefix: str) -> Iterator[str]:
    """`???` values; unlike OmegaConf.missing_keys this resolves nothing (names interpolate them)."""
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not OmegaConf.is_interpolation(node, key):
            yield from missing_paths(child, f"{prefix}{key}.")


def chosen_by(key: str, choices: Mapping[str, str | None]) -> str:
    group = key.split(".")[0]
    picked = f"{group}={choices.get(group)}"
    experiment = choices.get("experiment")
    return f"experiment={experiment} ({picked})" if experiment else picked


def unknown_keys(cfg: DictConfig, choices: Mapping[str, str | None], config_name: str
                 ) -> Iterator[str]:
    """Keys of the composed config that none of the files it was composed from has."""
    known = known_tree(choices, config_name)
    composed = OmegaConf.to_container(cfg, resolve=False)
    for path in extra_paths(composed, known, ""):
        parent, _, leaf = path.rpartition(".")
        if parent == "engine" and vllm_engine(known.get("engine") or {}) \
                and leaf in vllm_engine_arguments():
            continue  # vLLM's own argument under its own name: passed to vllm.LLM as is
        yield unknown_key_line(path, known, choices)


def extra_paths(composed: Any, known: Any, prefix: str) -> Iterator[str]:
    if not isinstance(composed, dict) or not isinstance(known, dict) or not known \
            or prefix.rstrip(".") in FREE_FORM:
        return
    for key, value in composed.items():
        path = f"{prefix}{key}"
        if key not in known:
            yield path
        else:
            yield from extra_paths(value, known[key], f"{path}.")


def unknown_key_line(path: str, known: Mapping[str, Any], choices: Mapping[str, str | None]) -> str:
    parent, _, leaf = path.rpartition(".")
    siblings = known
    for part in parent.split(".") if parent else ():
        siblings = siblings.get(part) or {}
    group = path.split(".")[0]
    if group == "engine" and parent == "engine" and vllm_engine(known.get("engine") or {}):
        names = sorted(set(siblings) | vllm_engine_arguments())
        what = (f"not a vLLM engine argument (engine={choices.get('engine')}); vLLM arguments "
                f"this config does not list go under +engine.extra.<name>")
    else:
        names = sorted(siblings)
        what = f"not a setting of {group}={choices.get(group)}" if parent else "not a setting"
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f": did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
    return f"{path} is {what}{hint}"


def vllm_engine(engine: Mapping[str, Any]) -> bool:
    target = str(engine.get("_target_") or "")
    return target.startswith("inference_vllm") if target else engine.get("name") in ("vllm", "ray")


def known_tree(choices: Mapping[str, str | None], config_name: str) -> dict[str, Any]:
    """The keys the config files themselves give (values unused), merged into one tree."""
    tree: dict[str, Any] = {}
    for name in primary_configs(config_name):
        merge_keys(tree, load_keys(Path(CONF_DIR, f"{name}.yaml")))
    for group, option in choices.items():
        if option is None or group.startswith("hydra"):
            continue
        keys = load_keys(Path(CONF_DIR, group, f"{option}.yaml"))
        if group in GLOBAL_GROUPS:
            merge_keys(tree, keys)
        else:
            merge_keys(tree.setdefault(group, {}), keys)
    return tree


def primary_configs(config_name: str) -> list[str]:
    """config_hf.yaml is `config` plus its own keys: follow plain names in its defaults list."""
    names = [config_name]
    for entry in load_yaml(Path(CONF_DIR, f"{config_name}.yaml")).get("defaults") or []:
        if isinstance(entry, str) and Path(CONF_DIR, f"{entry}.yaml").is_file() \
                and entry != "_self_":
            names += primary_configs(entry)
    return names


@lru_cache(maxsize=None)
def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return data if isinstance(data, dict) else {}


def load_keys(path: Path) -> dict[str, Any]:
    return {k: v for k, v in load_yaml(path).items() if k not in ("defaults", "hydra")}


def merge_keys(into: dict[str, Any], keys: Mapping[str, Any]) -> None:
    for key, value in keys.items():
        if isinstance(value, dict) and value and isinstance(into.get(key), dict) and into[key]:
            merge_keys(into[key], value)
        elif key not in into or not (isinstance(into[key], dict) and into[key]):
            into[key] = value


@lru_cache(maxsize=1)
def vllm_engine_arguments() -> frozenset[str]:
    """The field names of vLLM's EngineArgs dataclass, read from its source.

    Importing vllm.engine.arg_utils takes ~8 s (torch and vLLM's config tree, measured on the
    2-core machine); parsing the file takes milliseconds. The import is the fallback.
    """
    spec = importlib.util.find_spec("vllm.engine.arg_utils")
    if spec is None or spec.origin is None:
        return frozenset()
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "EngineArgs":
            return frozenset(stmt.target.id for stmt in node.body
                             if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name))
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return frozenset(f.name for f in dataclasses.fields(EngineArgs))
