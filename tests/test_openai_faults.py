"""engine=openai against a local fault server: retries, final errors, n fan-out, secrets (no model)."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from conftest import REPO
from fault_server import (BAD_REQUEST, BAD_REQUEST_MESSAGE, MODEL_ID, NO_CHOICES, NOT_JSON, OK,
                          RATE_LIMITED, SERVER_ERROR, SHORT_N, SLOW, FaultServer)
from inference_core.config import ConfigError
from inference_core.engine import GenerationRequest, SamplingSettings
from inference_openai.engine import OpenAIEngine
from inference_openai.transport import RetryPolicy, retry_after_seconds

SAMPLING = SamplingSettings(num_samples=2, temperature=1.0, top_p=0.9, top_k=50, max_tokens=16,
                            seed=42)


def engine_cfg(server: FaultServer, **overrides: Any) -> dict[str, Any]:
    cfg = {"_target_": "inference_openai.engine.OpenAIEngine", "name": "openai",
           "base_url": server.base_url, "model": None, "api": "completions",
           "prompt": "token_ids", "max_concurrency": 4, "timeout_s": 0.5, "max_retries": 3,
           "backoff_s": 0.01, "max_backoff_s": 5, "supports_n": "auto", "max_model_len": 2048}
    cfg.update(overrides)
    return cfg


def start(server: FaultServer, tmp_path: Path, **overrides: Any) -> OpenAIEngine:
    # No tokenizer there: token-id prompts and the answers' token counts need none.
    return OpenAIEngine(str(tmp_path / "no-model"), engine_cfg(server, **overrides), seed=42)


def lazy(requests: list[GenerationRequest]) -> Iterator[GenerationRequest]:
    yield from requests  # no len(): the engine must take requests as they come


def request(kind: int, i: int, n: int = 2) -> GenerationRequest:
    return GenerationRequest(str(i), (kind, 100 + i, 200), n)


@pytest.mark.slow
def test_faults_are_retried_and_a_400_is_reported(tmp_path: Path) -> None:
    kinds = [OK, RATE_LIMITED, SERVER_ERROR, SLOW, BAD_REQUEST, OK]
    requests = [request(kind, i) for i, kind in enumerate(kinds)]
    with FaultServer(retry_after="1") as server:
        engine = start(server, tmp_path)
        began = time.perf_counter()
        completions = list(engine.generate(lazy(requests), SAMPLING))
        elapsed = time.perf_counter() - began
        stats = engine.stats()
        engine.close()
    ids = [c.request_id for c in completions]
    assert sorted(ids) == sorted(r.request_id for r in requests)  # each exactly once
    by_id = {c.request_id: c for c in completions}
    failed = by_id["4"]
    assert failed.texts == () and BAD_REQUEST_MESSAGE in failed.error and "HTTP 400" in failed.error
    for c in completions:
        if c.request_id != "4":
            assert c.error is None and len(c.texts) == 2
            assert c.finish_reasons == ("stop", "stop") and c.stop_reasons == (None, None)
            assert c.output_tokens == (5, 5) and c.prompt_tokens == 3
    assert stats["errors_by_status"] == {"400": 1, "429": 2, "500": 1, "timeout": 1}
    assert stats["retries"] == 4 and stats["failed_requests"] == 1
    assert stats["http_requests"] == len(kinds) + 4
    assert elapsed >= 2.0  # two 429s, each with Retry-After: 1
    assert stats["endpoint"] == server.base_url.rsplit("/v1", 1)[0] and stats["model"] == MODEL_ID
    assert set(stats["latency_seconds"]) == {"p50", "p90", "p99"}


def test_retries_run_out_with_the_last_answer(tmp_path: Path) -> None:
    with FaultServer(retry_after="0") as server:
        engine = start(server, tmp_path, max_retries=1)
        (completion,) = engine.generate([request(RATE_LIMITED, 0)], SAMPLING)
        engine.close()
    assert completion.texts == ()
    assert "HTTP 429: rate limited (gave up after 1 retries)" == completion.error


def test_a_server_that_ignores_n_gets_one_request_per_sample(tmp_path: Path) -> None:
    with FaultServer() as server:
        engine = start(server, tmp_path)
        (short,) = engine.generate([request(SHORT_N, 0, n=3)], SAMPLING)
        (later,) = engine.generate([request(OK, 1, n=3)], SAMPLING)
        stats = engine.stats()
        engine.close()
    assert len(short.texts) == 3 and len(later.texts) == 3
    assert stats["n_per_request"] is False and stats["fanout_requests"] == 2 + 3
    assert [b["n"] for b in server.bodies] == [3, 1, 1, 1, 1, 1]


def test_supports_n_false_sends_n_single_requests_with_distinct_seeds(tmp_path: Path) -> None:
    with FaultServer() as server:
        engine = start(server, tmp_path, supports_n=False, send_seed=True)
        (completion,) = engine.generate([request(OK, 0, n=3)], SAMPLING)
        engine.close()
    assert len(completion.texts) == 3
    assert sorted(b["seed"] for b in server.bodies) == [42, 43, 44]
    assert all(b["n"] == 1 for b in server.bodies)


def test_plain_openai_servers_get_no_vllm_fields(tmp_path: Path, caplog: Any) -> None:
    with FaultServer() as server, caplog.at_level(logging.WARNING):
        engine = start(server, tmp_path)
        list(engine.generate([request(OK, 0)], SAMPLING))
        stats = engine.stats()
        engine.close()
    body = server.bodies[0]
    assert "top_k" not in body and "seed" not in body and body["model"] == MODEL_ID
    assert stats["sampling_not_sent"] == ["top_k=50"] and "top_k=50 not sent" in caplog.text


def test_price_turns_usage_into_cost(tmp_path: Path) -> None:
    with FaultServer() as server:
        engine = start(server, tmp_path, price_per_million_input=1.0,
                       price_per_million_output=2.0)
        list(engine.generate([request(OK, 0)], SAMPLING))
        stats = engine.stats()
        engine.close()
    assert stats["usage"] == {"prompt_tokens": 3, "completion_tokens": 10}
    assert stats["cost"] == {"input": 3e-06, "output": 2e-05, "total": 2.3e-05}


def test_the_key_goes_to_the_server_and_nowhere_else(tmp_path: Path, caplog: Any,
                                                     monkeypatch: Any) -> None:
    secret = "sk-test-0123456789-never-logged"
    monkeypatch.setenv("FAULT_SERVER_KEY", secret)
    with FaultServer() as server, caplog.at_level(logging.DEBUG):
        engine = start(server, tmp_path, api_key_env="FAULT_SERVER_KEY")
        list(engine.generate([request(OK, 0), request(BAD_REQUEST, 1)], SAMPLING))
        stats = engine.stats()
        engine.close()
    assert set(server.auth_headers) == {f"Bearer {secret}"}
    assert secret not in caplog.text and secret not in repr(stats)
    assert secret not in repr(engine.settings)


def test_a_refused_connection_is_one_config_error(tmp_path: Path) -> None:
    with FaultServer() as server:
        url = server.base_url
    with pytest.raises(ConfigError, match="refused the connection"):
        OpenAIEngine(str(tmp_path), engine_cfg(server, base_url=url), seed=1)


@pytest.mark.parametrize("overrides, message", [
    ({"api_key_env": "NO_SUCH_VARIABLE_HERE"}, "NO_SUCH_VARIABLE_HERE: that environment variable"),
    ({"model": "other"}, "engine.model=other is not served"),
    ({"api": "responses"}, "engine.api='responses'"),
    ({"max_concurrency": 0}, "engine.max_concurrency=0 must be above 0"),
    ({"base_url": "http://user:pw@127.0.0.1:1/v1"}, "must not carry credentials"),
    ({"api_key": "sk-in-the-config"}, "never put the key in the config"),
    ({"max_model_len": 4096}, None),
])
@pytest.mark.slow
def test_bad_settings_are_one_line(tmp_path: Path, overrides: dict[str, Any],
                                   message: str | None) -> None:
    with FaultServer() as server:
        cfg = engine_cfg(server, **overrides)
        if message is None:  # the fault server reports no window: nothing to check against
            OpenAIEngine(str(tmp_path), cfg, seed=1).close()
            return
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            OpenAIEngine(str(tmp_path), cfg, seed=1)


def test_chat_without_messages_says_what_to_use(tmp_path: Path) -> None:
    with FaultServer() as server:
        engine = start(server, tmp_path, api="chat")
        with pytest.raises(ConfigError, match="use engine.api=completions"):
            list(engine.generate([request(OK, 0)], SAMPLING))
        engine.close()


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, backoff_s=1.0, max_backoff_s=10.0, timeout_s=1.0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0)]:
        assert ceiling / 2 <= policy.delay(retry, None) <= ceiling
    assert policy.delay(1, 3.0) == 3.0 and policy.delay(1, 99.0) == 10.0
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None


@pytest.mark.slow
def test_a_server_that_is_down_is_exit_2_before_any_generation(tmp_path: Path) -> None:
    with FaultServer() as server:
        url = server.base_url  # closed again: nothing listens there now
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "inference_vllm", "engine=openai", f"engine.base_url={url}",
         f"output_dir={out}", "sampling.num_samples=2", "sampling.max_tokens=16"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr[-2000:]
    log = result.stdout + result.stderr
    assert "refused the connection" in log and "Traceback" not in log
    assert not (out / "users").exists() or not any((out / "users").iterdir())


def test_a_run_lists_the_refused_item_with_the_servers_message(tmp_path: Path,
                                                                monkeypatch: Any,
                                                                caplog: Any) -> None:
    """A whole run (pipeline, collector, merge) where the server refuses one prompt with a 400."""
    from conftest import DATA, compose
    from inference_core.run.job import prepare_job
    from inference_core.run.pipeline import run_job

    secret = "sk-run-test-2b7d0c-never-written"
    monkeypatch.setenv("FAULT_SERVER_KEY", secret)
    out = tmp_path / "run"
    test = orjson.loads((DATA / "Chameleons" / "test_leaderboard.json").read_bytes())[:3]
    items = sum(len(c["data"]) for u in test for c in u["task"]["task_behavior_collections"])
    with FaultServer(reject_prompts=1) as server, caplog.at_level(logging.INFO):
        job = prepare_job(compose(
            "engine=openai", "engine.prompt=token_ids", "engine.api_key_env=FAULT_SERVER_KEY",
            f"engine.base_url={server.base_url}", f"output_dir={out}", "sampling.num_samples=2",
            "sampling.max_tokens=16", "allow_skips=true", "evaluate=false", "report=false",
            "max_users=3"))
        run_job(job, lambda job, adapters=(): OpenAIEngine(
            str(job.model_path), job.engine_cfg, job.sampling.seed, adapters))
    summary = orjson.loads((out / "inference_summary.json").read_bytes())
    (skipped,) = summary["skipped_items"]
    assert BAD_REQUEST_MESSAGE in skipped["reason"] and "HTTP 400" in skipped["reason"]
    assert summary["num_data_items"] == items - 1 and summary["engine"] == "openai"
    stats = summary["shards"][0]["engine_stats"]
    assert stats["errors_by_status"] == {"400": 1} and stats["retries"] == 0
    assert secret not in caplog.text
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

def test_request_bodies_for_each_api() -> None:
    from inference_openai.payload import BodyOptions, chat_body, completions_body, samples_of

    vllm = BodyOptions("m", "completions", extended_sampling=True, send_seed=False, extra_body={})
    text = completions_body("<|im_start|>hi", SAMPLING, 2, 42, vllm)
    assert text["prompt"] == "<|im_start|>hi" and text["add_special_tokens"] is False
    assert text["top_k"] == 50 and text["return_token_ids"] is True and "seed" not in text
    ids = completions_body((1, 2, 3), SAMPLING, 2, 42, vllm)
    assert ids["prompt"] == [1, 2, 3] and "add_special_tokens" not in ids
    hosted = BodyOptions("m", "chat", extended_sampling=False, send_seed=True,
                         extra_body={"user": "lab"})
    chat = chat_body(({"role": "user", "content": "hi"},), SAMPLING, 2, 7, hosted)
    assert chat["max_completion_tokens"] == 16 and "max_tokens" not in chat
    assert chat["seed"] == 7 and chat["user"] == "lab" and "top_k" not in chat
    answer = {"choices": [{"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
                          {"index": 0, "message": {"content": None}, "finish_reason": "stop",
                           "stop_reason": 2}]}
    first, second = samples_of(answer, "chat")
    assert (first.text, first.stop_reason, second.text) == ("", None, "b")
    assert second.finish_reason == "length" and second.tokens is None


def test_a_consumer_that_stops_early_cancels_what_is_in_flight(tmp_path: Path) -> None:
    with FaultServer(slow_s=3.0) as server:
        engine = start(server, tmp_path, timeout_s=30)
        began = time.perf_counter()
        completions = engine.generate([request(OK, 0)] + [request(SLOW, i) for i in (1, 2, 3)],
                                      SAMPLING)
        first = next(completions)
        completions.close()  # what a signal does to the pipeline's loop
        engine.close()
        assert time.perf_counter() - began < 2.5  # nobody waited for the slow answers
    assert first.request_id == "0"


@pytest.mark.slow
def test_a_429_with_retry_after_pauses_every_request(tmp_path: Path) -> None:
    with FaultServer(retry_after="1") as server:
        engine = start(server, tmp_path, max_concurrency=2)
        list(engine.generate([request(RATE_LIMITED, 0)] + [request(OK, i) for i in (1, 2, 3, 4)],
                             SAMPLING))
        engine.close()
    first_429 = min(t for t, _, status in server.arrivals if status == 429)
    during_pause = [t for t, kind, _ in server.arrivals if first_429 + 0.05 < t < first_429 + 0.95]
    assert during_pause == []  # nobody ran into the limit again while the server asked to wait
    assert len(server.arrivals) == 5 + 2


def test_an_answer_that_is_not_a_completion_fails_that_request_only(tmp_path: Path) -> None:
    with FaultServer() as server:
        engine = start(server, tmp_path)
        completions = {c.request_id: c for c in engine.generate(
            [request(NOT_JSON, 0), request(NO_CHOICES, 1), request(OK, 2)], SAMPLING)}
        engine.close()
    assert "not a JSON object: '<html>gateway</html>'" in completions["0"].error
    assert "no choices" in completions["1"].error
    assert completions["2"].error is None and len(completions["2"].texts) == 2


class SlowFeed:
    """A request feed as the pipeline fills it: `take_ready` answers what is there, or None at
    the end; the test checks completions come out while the feed is still open."""

    def __init__(self, requests: list[GenerationRequest]) -> None:
        self.requests = requests
        self.opened = time.perf_counter()
        self.given = 0

    def take_ready(self, block: bool) -> list[GenerationRequest] | None:
        assert not block  # a busy engine never waits for prompts
        due = min(len(self.requests), 1 + int((time.perf_counter() - self.opened) / 0.3))
        if self.given == len(self.requests):
            return None
        batch, self.given = self.requests[self.given:due], due
        return batch


def test_a_feed_is_served_while_it_fills(tmp_path: Path) -> None:
    feed = SlowFeed([request(OK, i) for i in range(4)])
    with FaultServer() as server:
        engine = start(server, tmp_path)
        seen = [(c.request_id, feed.given) for c in engine.generate(feed, SAMPLING)]
        engine.close()
    assert sorted(i for i, _ in seen) == ["0", "1", "2", "3"]
    assert seen[0][1] < 4  # the first answer came out before the last request was fed
