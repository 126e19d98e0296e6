"""Text pieces of a prompt: the Jinja environment, profile lines/tags, turns, envelopes.

Templates live in YAML (conf/prompt/, conf/dataset/); this module only gives them data and a
few filters. Rendering is sandboxed: a user's own template cannot reach Python internals.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from inference_core.data.records import Turn, UserRecord
from inference_core.prompts.settings import PromptConfigError

CHATML_OPEN = "<|im_start|>"
GEMMA_OPEN = "<start_of_turn>"


def clip(text: str, limit: int, ellipsis: str = "...") -> str:
    """At most `limit` characters: longer text keeps limit - len(ellipsis) and the ellipsis."""
    return text if len(text) <= limit else text[:limit - len(ellipsis)] + ellipsis


def _rstrip(text: str, chars: str | None = None) -> str:
    return str(text).rstrip(chars)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(keep_trailing_newline=True, autoescape=False,
                                        undefined=StrictUndefined)
    env.filters.update(clip=clip, rstrip=_rstrip)
    return env


ENV = _environment()


@lru_cache(maxsize=256)
def compile_template(source: str, where: str) -> Template:
    try:
        return ENV.from_string(source)
    except TemplateSyntaxError as err:
        raise PromptConfigError(f"{where}: Jinja syntax error on line {err.lineno}: {err.message}"
                                ) from None


def flatten(value: Any, prefix: str = "") -> list[str]:
    """Nested profile/personality fields as 'key: value' lines, in their input order."""
    if isinstance(value, dict):
        lines: list[str] = []
        for key, sub in value.items():
            lines += flatten(sub, f"{prefix}{key}" if not prefix else f"{prefix} / {key}")
        return lines
    if value in (None, "", [], {}):
        return []
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return [f"{prefix}: {value}" if prefix else str(value)]


def profile_lines(user: UserRecord) -> list[str]:
    return flatten(user.profile) + flatten(user.personality)


def dimension_tags(structured: Any) -> list[str]:
    """The training loader's DIM_ tags (TRAINING_FORMATS.md §3), flat or nested decided once for
    the whole dict: if any key holds a ".", every key with a value other than None gives
    [DIM_KEY=str(value)] (KEY upper-cased, "." -> "_"); otherwise only
    `{scale: {"dimensions": {sub: {"score": x}}}}` entries give [DIM_SCALE_SUB=x]."""
    if not isinstance(structured, dict):
        return []
    if any("." in str(key) for key in structured):
        return [f"[DIM_{str(key).upper().replace('.', '_')}={value}]"
                for key, value in structured.items() if value is not None]
    tags = []
    for key, value in structured.items():
        dims = value.get("dimensions") if isinstance(value, dict) else None
        for sub, entry in (dims or {}).items() if isinstance(dims, dict) else ():
            if isinstance(entry, dict) and "score" in entry:
                tags.append(f"[DIM_{str(key).upper()}_{str(sub).upper()}={entry['score']}]")
    return tags


FIRST_TAGS = ("name", "age", "gender")
NOT_TAGGED = {"unstructured", *FIRST_TAGS}


def profile_tags(user: UserRecord) -> list[str]:
    """The training loader's profile tags: name, age, gender, DIM_ tags, other truthy keys."""
    profile = user.profile
    tags = [f"[USER_{k.upper()}={profile[k]}]" for k in FIRST_TAGS if profile.get(k)]
    tags += dimension_tags((user.personality or {}).get("structured"))
    tags += [f"[USER_{str(k).upper()}={v}]" for k, v in profile.items()
             if k not in NOT_TAGGED and v]
    return tags


def is_own_turn(turn: Turn, user: UserRecord) -> bool:
    """The training role rule: the user's own line when the source is "user" (any case) or the
    profile name, both compared with surrounding spaces stripped, as training did ("YS " is
    the user YS); a blank name matches nothing."""
    source, name = turn.source.strip(), (user.name or "").strip()
    return source.lower() == "user" or (bool(name) and source == name)


def turn_data(turns: Iterable[Turn], user: UserRecord, drop_blank: bool) -> list[dict[str, Any]]:
    out = []
    for t in turns:
        content = t.content.strip() if drop_blank else t.content
        if drop_blank and not content:
            continue
        line = f"{t.source}: {content}" if t.source else content  # the native turn line
        out.append({"source": t.source, "content": content, "own": is_own_turn(t, user),
                    "line": line})
    return out


def envelope_family(tokenizer: Any) -> str:
    """chatml or gemma, from the checkpoint's chat template."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):
        template = " ".join(template.values())
    if GEMMA_OPEN in template:
        return "gemma"
    if CHATML_OPEN in template:
        return "chatml"
    raise PromptConfigError("prompt.envelope=auto: the tokenizer's chat template is neither "
                            "ChatML (<|im_start|>) nor Gemma (<start_of_turn>); set "
                            "prompt.envelope=chatml or gemma")


def chatml_envelope(tokenizer: Any, system: str, template_kwargs: dict[str, Any]) -> str:
    """Training's Qwen envelope: the system-only chat, stripped, then the assistant opener."""
    rendered = tokenizer.apply_chat_template([{"role": "system", "content": system}],
                                             tokenize=False, add_generation_prompt=False,
                                             **template_kwargs)
    return rendered.strip() + "<|im_start|>assistant\n"


def gemma_envelope(system: str, bos: str = "<bos>") -> str:
    """Training's Gemma envelope: S is the whole user turn; one BOS, written here (the prompt
    is tokenized without special tokens, so the tokenizer adds no second one)."""
    return f"{bos}<start_of_turn>user\n{system}<end_of_turn>\n<start_of_turn>model\n"
