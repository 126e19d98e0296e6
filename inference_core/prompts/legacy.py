"""The original builder's arguments (PromptStyle), still accepted: they mean the native format."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from inference_core.prompts.settings import PromptSettings, settings_from_config

NATIVE_YAML = Path(__file__).resolve().parents[2] / "conf" / "prompt" / "native.yaml"


@dataclass(frozen=True)
class PromptStyle:
    """Dataset-specific wording of the native format (dataset.instruction and friends)."""

    instruction: str
    history_header: str
    history_context_turns: int


def native_settings(style: PromptStyle, chat_template_kwargs: dict[str, Any] | None = None,
                    ) -> PromptSettings:
    """conf/prompt/native.yaml with the style's wording in place of the dataset's."""
    fmt = OmegaConf.load(NATIVE_YAML)
    fmt.parts = {"instruction": style.instruction, "history_header": style.history_header,
                 "history_context_turns": style.history_context_turns}
    return settings_from_config(OmegaConf.to_container(fmt, resolve=True), None,
                                chat_template_kwargs)
