"""A prompt format as typed settings: the format's YAML (conf/prompt/) merged with the dataset's
own parts (`dataset.prompt.<section>`), checked once, recorded in run.json, rebuilt from there.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import orjson

ENVELOPES = ("chat", "chatml", "gemma", "auto")
HISTORY_ORDERS = ("time", "file")
TRUNCATION_STEPS = ("history", "context", "cut_turn")


class PromptConfigError(ValueError):
    """A prompt setting that cannot work (inference_core.config re-raises it as ConfigError)."""


@dataclass(frozen=True)
class AnswerWrapper:
    """The tags a format's training target sat between: the prompt ends with `open`."""

    open: str
    close: str


@dataclass(frozen=True)
class PromptSettings:
    """Everything that decides a prompt's text, as plain data (Jinja templates as strings)."""

    name: str
    # chat: the tokenizer's chat template with add_generation_prompt; chatml / gemma: one
    # system message in the training envelope; auto: chatml or gemma from the chat template.
    envelope: str
    system: str
    user: str | None = None
    template_file: str | None = None
    history_item: str = "{{ item.text }}"
    context_line: str = "{{ turn.source }}: {{ turn.content }}"
    history_order: str = "time"
    history_limit: int | None = None
    drop_blank_turns: bool = False
    # What the token budget takes away, in this order (oldest first within each).
    truncate: tuple[str, ...] = ("history", "context", "cut_turn")
    answer: AnswerWrapper | None = None
    # Whether the dataset's own stop strings still apply (the one-line "\n" stop does not when
    # the model was trained to close its answer with a tag).
    dataset_stop: bool = True
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    parts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"prompt={self.name}"
        if self.envelope not in ENVELOPES:
            raise PromptConfigError(f"{where}: prompt.envelope={self.envelope!r}; choose one of "
                                    f"{', '.join(ENVELOPES)}")
        if self.history_order not in HISTORY_ORDERS:
            raise PromptConfigError(f"{where}: history_order={self.history_order!r}; choose one "
                                    f"of {', '.join(HISTORY_ORDERS)}")
        order = [s for s in self.truncate if s != "cut_turn"]
        cut_ok = "cut_turn" not in self.truncate or (
            self.truncate.count("cut_turn") == 1 and self.truncate[-1] == "cut_turn"
            and order[-1:] == ["context"])
        if sorted(order) != ["context", "history"] or not cut_ok:
            raise PromptConfigError(
                f"{where}: truncate={list(self.truncate)}; name history and context once each, in "
                f"the order they lose their oldest pieces, optionally followed by cut_turn "
                f"(only after context: it cuts the newest turn's oldest text)")
        if self.user is not None and self.envelope != "chat":
            raise PromptConfigError(f"{where}: a user message template needs envelope=chat "
                                    f"(the {self.envelope} envelope holds one system message)")

    @property
    def extra_stop(self) -> tuple[str, ...]:
        """Stop strings the format adds: its answer's closing tag."""
        return (self.answer.close,) if self.answer else ()

    def stop_strings(self, dataset_stop: tuple[str, ...]) -> tuple[str, ...]:
        """The stop strings a run with this format uses."""
        kept = tuple(dataset_stop) if self.dataset_stop else ()
        return kept + tuple(s for s in self.extra_stop if s not in kept)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["truncate"] = list(self.truncate)
        data["parts"] = dict(self.parts)
        data["chat_template_kwargs"] = dict(self.chat_template_kwargs)
        return data

    def digest(self) -> str:
        """sha256 of everything that decides the text: two runs with one digest share prompts."""
        return hashlib.sha256(orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def identity(self) -> dict[str, Any]:
        """For run.json: enough to rebuild the builder (templates included) and its digest."""
        return {**self.as_dict(), "digest": self.digest()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PromptSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"digest", "dataset_sections"})
        name = data.get("name", "?")
        if unknown:
            raise PromptConfigError(f"prompt={name}: unknown key(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(sorted(known))}")
        values = {k: v for k, v in data.items() if k in known}
        answer = values.get("answer")
        if isinstance(answer, Mapping):
            values["answer"] = AnswerWrapper(str(answer["open"]), str(answer["close"]))
        if "truncate" in values:
            values["truncate"] = tuple(values["truncate"])
        for key in ("parts", "chat_template_kwargs"):
            values[key] = dict(values.get(key) or {})
        return cls(**values)


def merge_sections(fmt: Mapping[str, Any], dataset_prompt: Mapping[str, Any] | None,
                   ) -> dict[str, Any]:
    """The format's keys, overridden by the dataset's sections named in `dataset_sections`
    (first listed wins: an era names its own section before the one it shares with `tagged`).
    `parts` merge key by key; a section's `reset: [key, ...]` gives those keys back the format's
    own value over what a later-listed section set (null cannot: it is a value, e.g. no limit);
    a `template` file replaces the system text."""
    merged = {k: v for k, v in fmt.items() if k not in ("dataset_sections", "template")}
    parts = dict(fmt.get("parts") or {})
    for section in reversed(list(fmt.get("dataset_sections") or [])):
        own = dict((dataset_prompt or {}).get(section) or {})
        for key in own.pop("reset", None) or ():
            reset_key(merged, fmt, str(key), section)
        parts.update(own.pop("parts", None) or {})
        merged.update(own)
    merged["parts"] = parts
    template = fmt.get("template")
    if template:
        path = Path(str(template)).expanduser()
        if not path.is_file():
            raise PromptConfigError(f"prompt.template={template}: no such file; give the path "
                                    f"of a Jinja template (.j2) for the system message")
        merged["system"] = path.read_text(encoding="utf-8")
        merged["template_file"] = str(path.resolve())
    return merged


def reset_key(merged: dict[str, Any], fmt: Mapping[str, Any], key: str, section: str) -> None:
    """`merged[key]` back to the format's value (or PromptSettings' default where it sets none)."""
    resettable = {f.name for f in fields(PromptSettings)} - {"name", "parts", "template_file",
                                                             "chat_template_kwargs"}
    if key not in resettable:
        raise PromptConfigError(f"dataset.prompt.{section}.reset names {key!r}; choose from "
                                f"{', '.join(sorted(resettable))}")
    if key in fmt:
        merged[key] = fmt[key]
    else:
        merged.pop(key, None)


def settings_from_config(fmt: Mapping[str, Any], dataset_prompt: Mapping[str, Any] | None,
                         chat_template_kwargs: Mapping[str, Any] | None = None) -> PromptSettings:
    """PromptSettings of the composed `prompt` group and the dataset's `prompt` sections."""
    merged = merge_sections(fmt, dataset_prompt)
    if not merged.get("system"):
        raise PromptConfigError(f"prompt={merged.get('name', '?')}: no system template; set "
                                f"prompt.system or prompt.template=/path/file.j2")
    merged["chat_template_kwargs"] = dict(chat_template_kwargs or {})
    return PromptSettings.from_dict(merged)
