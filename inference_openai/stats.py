"""What one endpoint session did, for inference_summary.json's engine_stats."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inference_openai.settings import EndpointSettings


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 <= q <= 100)."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class EndpointStats:
    """Counters kept by the event-loop thread; read once the run is over."""

    http_requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    # "429", "500", "timeout", "connect": every answer that was not a success, retried or not.
    errors_by_status: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Requests made to stand in for `n` where the server gave fewer samples than asked.
    fanout_requests: int = 0
    # Likelihood mode: requests scored (the probe not counted), their target tokens, and the
    # extra prefills that scored next tokens appended to the prompt (endpoints without vLLM's
    # logprob_token_ids).
    scoring_requests: int = 0
    scored_tokens: int = 0
    next_token_requests: int = 0

    def usage(self, body: dict[str, Any]) -> None:
        usage = body.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def as_dict(self, settings: EndpointSettings, model: str, extras: dict[str, Any]) -> dict[str, Any]:
        ordered = sorted(self.latencies_s)
        out: dict[str, Any] = {
            "endpoint": settings.endpoint,
            "model": model,
            "api": settings.api,
            "max_concurrency": settings.max_concurrency,
            "http_requests": self.http_requests,
            "retries": self.retries,
            "failed_requests": self.failed_requests,
            "fanout_requests": self.fanout_requests,
            "scoring_requests": self.scoring_requests,
            "scored_tokens": self.scored_tokens,
            "next_token_requests": self.next_token_requests,
            "errors_by_status": dict(sorted(self.errors_by_status.items())),
            "latency_seconds": {f"p{q}": round(percentile(ordered, q), 3) for q in (50, 90, 99)},
            "usage": {"prompt_tokens": self.prompt_tokens,
                      "completion_tokens": self.completion_tokens},
            **extras,
        }
        cost = self.cost(settings)
        if cost is not None:
            out["cost"] = cost
        return out

    def cost(self, settings: EndpointSettings) -> dict[str, float] | None:
        if settings.price_per_million_input is None and settings.price_per_million_output is None:
            return None
        inp = self.prompt_tokens * (settings.price_per_million_input or 0.0) / 1e6
        out = self.completion_tokens * (settings.price_per_million_output or 0.0) / 1e6
        return {"input": round(inp, 6), "output": round(out, 6), "total": round(inp + out, 6)}
