"""Request bodies for /completions and /chat/completions, and the samples in their answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from inference_core.engine import SamplingSettings

PATHS = {"completions": "completions", "chat": "chat/completions"}


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str
    # The stop string that ended it (vLLM servers say; hosted APIs do not): None otherwise.
    stop_reason: str | None
    # Generated tokens when the answer says (vLLM's token_ids); None: count them afterwards.
    tokens: int | None


@dataclass(frozen=True)
class BodyOptions:
    """What the engine learnt about the server, for every body it builds."""

    model: str
    api: str
    extended_sampling: bool
    send_seed: bool
    extra_body: Mapping[str, Any]


def sampling_fields(sampling: SamplingSettings, n: int, seed: int | None,
                    options: BodyOptions) -> dict[str, Any]:
    fields: dict[str, Any] = {"n": n, "max_tokens": sampling.max_tokens,
                              "temperature": sampling.temperature, "top_p": sampling.top_p}
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    if options.send_seed and seed is not None:
        fields["seed"] = seed
    if options.extended_sampling:
        fields.update(top_k=sampling.top_k, min_tokens=sampling.min_tokens,
                      repetition_penalty=getattr(sampling, "repetition_penalty", 1.0),
                      # vLLM returns the generated ids: exact output token counts.
                      return_token_ids=True)
    return fields


def unsent_sampling(sampling: SamplingSettings) -> list[str]:
    """Our settings a plain OpenAI API cannot take, where they differ from its behaviour."""
    unsent = []
    if sampling.top_k not in (0, -1):
        unsent.append(f"top_k={sampling.top_k}")
    if sampling.min_tokens > 1:
        unsent.append(f"min_tokens={sampling.min_tokens}")
    penalty = getattr(sampling, "repetition_penalty", 1.0)
    if penalty != 1.0:
        unsent.append(f"repetition_penalty={penalty}")
    return unsent


def completions_body(prompt: str | Sequence[int], sampling: SamplingSettings, n: int,
                     seed: int | None, options: BodyOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": options.model,
                            "prompt": prompt if isinstance(prompt, str) else list(prompt),
                            **sampling_fields(sampling, n, seed, options)}
    if options.extended_sampling and isinstance(prompt, str):
        # The text was rendered by the chat template already, BOS included where it has one.
        body["add_special_tokens"] = False
    body.update(options.extra_body)
    return body


def chat_body(messages: Sequence[Mapping[str, str]], sampling: SamplingSettings, n: int,
              seed: int | None, options: BodyOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": options.model,
                            "messages": [dict(m) for m in messages],
                            **sampling_fields(sampling, n, seed, options)}
    # The chat API's current name for it (max_tokens is deprecated there, refused by some models).
    body["max_completion_tokens"] = body.pop("max_tokens")
    body.update(options.extra_body)
    return body


def samples_of(answer: Mapping[str, Any], api: str) -> list[Sample]:
    """The answer's choices in index order."""
    choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    out = []
    for choice in choices:
        if api == "chat":
            text = (choice.get("message") or {}).get("content") or ""
        else:
            text = choice.get("text") or ""
        stop = choice.get("stop_reason")  # an int there is a stop token id: not a stop string
        ids = choice.get("token_ids")
        out.append(Sample(text, str(choice.get("finish_reason") or "stop"),
                          stop if isinstance(stop, str) else None,
                          len(ids) if isinstance(ids, list) else None))
    if len(out) == 1 and out[0].tokens is None:
        used = (answer.get("usage") or {}).get("completion_tokens")
        if isinstance(used, int):
            out[0] = Sample(out[0].text, out[0].finish_reason, out[0].stop_reason, used)
    return out
