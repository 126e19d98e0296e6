"""A cheap GET /models before any work: the server answers, the key works, the model is served."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import orjson

from inference_core.config import ConfigError
from inference_openai.settings import EndpointSettings
from inference_openai.transport import server_message


@dataclass(frozen=True)
class ServedModel:
    model_id: str
    # "vllm" on a vLLM server: it takes token-id prompts, n, and vLLM's extra sampling fields.
    owned_by: str | None
    # The server's context window where it says (vLLM does); None otherwise.
    max_model_len: int | None


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def list_models(settings: EndpointSettings) -> list[Mapping[str, Any]]:
    where = f"engine.base_url={settings.endpoint}"
    try:
        response = httpx.get(f"{settings.base_url}/models", headers=auth_headers(settings.api_key()),
                             timeout=settings.connect_timeout_s)
    except httpx.ConnectError:
        raise ConfigError(f"{where} refused the connection: start the server (e.g. `vllm serve`) "
                          f"or fix engine.base_url") from None
    except httpx.TimeoutException:
        raise ConfigError(f"{where} did not answer GET /models within "
                          f"engine.connect_timeout_s={settings.connect_timeout_s:g}") from None
    except httpx.HTTPError as err:
        raise ConfigError(f"{where}: GET /models failed ({type(err).__name__})") from None
    if response.status_code in (401, 403):
        hint = (f"check the key in ${settings.api_key_env}" if settings.api_key_env
                else "set engine.api_key_env to the NAME of the variable holding the key")
        raise ConfigError(f"{where} refused the key (HTTP {response.status_code}: "
                          f"{server_message(response)}): {hint}")
    if response.status_code >= 400:
        raise ConfigError(f"{where}: GET /models answered HTTP {response.status_code} "
                          f"({server_message(response)}); is engine.base_url the API root "
                          f"(ending in /v1)?")
    try:
        data = orjson.loads(response.content).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        data = None
    if not isinstance(data, list):
        raise ConfigError(f"{where}: GET /models did not answer an OpenAI model list; is "
                          f"engine.base_url the API root (ending in /v1)?")
    return [m for m in data if isinstance(m, dict) and m.get("id")]


def served_model(settings: EndpointSettings) -> ServedModel:
    """The model this run asks for, checked against the server's list."""
    models = {str(m["id"]): m for m in list_models(settings)}
    if settings.model is None:
        if len(models) != 1:
            raise ConfigError(f"engine.model is unset and engine.base_url={settings.endpoint} "
                              f"serves {len(models)} models: set engine.model to one of "
                              f"{', '.join(sorted(models)[:20]) or '(none)'}")
        model_id = next(iter(models))
    elif settings.model in models:
        model_id = settings.model
    else:
        raise ConfigError(f"engine.model={settings.model} is not served by "
                          f"{settings.endpoint}; it serves {', '.join(sorted(models)[:20])}")
    entry = models[model_id]
    window = entry.get("max_model_len")
    return ServedModel(model_id, entry.get("owned_by"),
                       int(window) if isinstance(window, int) else None)
