"""vLLM's own metrics (LLM.get_metrics()) reduced to the figures the summary reports."""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, Iterable

log = logging.getLogger(__name__)


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


# vLLM's counters are cumulative per engine: a benchmark row reads its own difference.


def metric_key(m: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    return m.name, tuple(sorted((getattr(m, "labels", None) or {}).items()))


def metrics_delta(before: Iterable[Any], after: Iterable[Any]) -> list[Any]:
    """Counters and histograms of `after` minus `before` (gauges and vectors left out)."""
    old = {metric_key(m): m for m in before}
    out = []
    for m in after:
        prev = old.get(metric_key(m))
        kind = type(m).__name__
        if kind == "Histogram":
            buckets = {b: c - (prev.buckets.get(b, 0) if prev else 0) for b, c in m.buckets.items()}
            out.append(SimpleNamespace(name=m.name, buckets=buckets,
                                       count=m.count - (prev.count if prev else 0)))
        elif kind == "Counter":
            out.append(SimpleNamespace(name=m.name, value=m.value - (prev.value if prev else 0)))
    return out


def counter(metrics: Iterable[Any], name: str) -> int:
    return int(sum(m.value for m in metrics if m.name == name and hasattr(m, "value")))


class EngineWatch:
    """One vLLM row's metric difference: hits, cached and computed prompt tokens, TTFT."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        if not llm.reset_prefix_cache():
            log.warning("reset_prefix_cache() refused (requests still running?)")
        self.before = list(llm.get_metrics())

    def result(self) -> dict[str, Any]:
        delta = metrics_delta(self.before, self.llm.get_metrics())
        out = engine_metrics(delta)
        out["prefix_cache_queries"] = counter(delta, "vllm:prefix_cache_queries")
        out["prefix_cache_hits"] = counter(delta, "vllm:prefix_cache_hits")
        return out
