"""vLLM's own metrics (LLM.get_metrics()) reduced to the figures the summary reports."""
from __future__ import annotations

from typing import Any, Iterable


def histogram_quantile(buckets: dict[Any, float], count: float, q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile (Prometheus style, cumulative buckets)."""
    if not count:
        return None
    target = q * count
    for bound, cumulative in sorted(((float(b), c) for b, c in buckets.items())):
        if cumulative >= target:
            return bound
    return None


def engine_metrics(metrics: Iterable[Any]) -> dict[str, Any]:
    counters: dict[str, float] = {}
    histograms: dict[str, Any] = {}
    for m in metrics:
        if hasattr(m, "buckets"):
            histograms[m.name] = m
        elif hasattr(m, "value") and isinstance(m.value, (int, float)):
            counters[m.name] = counters.get(m.name, 0) + m.value
    out: dict[str, Any] = {}
    queries = counters.get("vllm:prefix_cache_queries")
    if queries:
        out["prefix_cache_hit_rate"] = counters.get("vllm:prefix_cache_hits", 0) / queries
    for key in ("vllm:prompt_tokens", "vllm:prompt_tokens_cached", "vllm:generation_tokens"):
        if key in counters:
            out[key.split(":", 1)[1]] = int(counters[key])
    drafts = counters.get("vllm:spec_decode_num_draft_tokens")
    if drafts:
        out["spec_decode_acceptance_rate"] = (
            counters.get("vllm:spec_decode_num_accepted_tokens", 0) / drafts)
    ttft = histograms.get("vllm:time_to_first_token_seconds")
    if ttft is not None:
        out["time_to_first_token_seconds"] = {
            f"p{int(q * 100)}": histogram_quantile(ttft.buckets, ttft.count, q)
            for q in (0.5, 0.9, 0.99)}
    return out
