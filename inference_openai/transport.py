"""One JSON POST with retries: 429, 5xx, timeouts and dropped connections back off and retry.

Waits grow exponentially with jitter and are never shorter than the server's Retry-After; any
other 4xx answer is final. Runs on the engine's event-loop thread.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import httpx
import orjson

from inference_openai.stats import EndpointStats

log = logging.getLogger(__name__)

# 408 (request timeout) and 409 (conflict, used by some gateways for overload) are transient too.
RETRIED_4XX = {408, 409, 429}
MESSAGE_CHARS = 500


class RequestFailed(Exception):
    """A request that got a final error answer, or ran out of retries."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    backoff_s: float
    max_backoff_s: float
    timeout_s: float

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Wait before retry number `retry` (1-based): jittered doubling, at least Retry-After."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        # "Equal jitter": half fixed, half random, so that many clients do not retry in step.
        wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_backoff_s)


class Throttle:
    """The concurrency limit, and a pause that every request honours after a 429's Retry-After.

    Without the shared pause, the other requests in flight would each run into the limit too.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.slots = asyncio.Semaphore(max_concurrency)
        self.not_before = 0.0

    def pause(self, seconds: float) -> None:
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    async def wait(self) -> None:
        while (delay := self.not_before - time.monotonic()) > 0:
            await asyncio.sleep(delay)


def retryable(status: int) -> bool:
    return status >= 500 or status in RETRIED_4XX


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def server_message(response: httpx.Response) -> str:
    """The error text an OpenAI-style server sends ({"error": {"message": ...}} or {"message"})."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:MESSAGE_CHARS].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:MESSAGE_CHARS]
        if isinstance(error, str):
            return error[:MESSAGE_CHARS]
        if body.get("message"):
            return str(body["message"])[:MESSAGE_CHARS]
    return response.text[:MESSAGE_CHARS]


def json_answer(response: httpx.Response) -> dict[str, Any]:
    """A success's JSON object; a proxy's HTML page or a cut-off body is a final failure."""
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        raise RequestFailed(f"HTTP {response.status_code} but the answer is not a JSON object: "
                            f"{response.text[:200]!r}")
    return answer


async def post_json(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                    policy: RetryPolicy, throttle: Throttle,
                    stats: EndpointStats) -> dict[str, Any]:
    """The answer's JSON; RequestFailed with the server's message when it is final."""
    payload = orjson.dumps(body)
    retry = 0
    while True:
        wait_hint = None
        async with throttle.slots:  # the slot is held for the call only, not for the back-off
            await throttle.wait()
            stats.http_requests += 1
            start = time.perf_counter()
            try:
                response = await client.post(path, content=payload,
                                             headers={"Content-Type": "application/json"})
            except httpx.TimeoutException:
                stats.errors_by_status["timeout"] += 1
                failure = f"no answer within engine.timeout_s={policy.timeout_s:g}"
            except httpx.TransportError as err:  # refused or dropped: the server may be restarting
                stats.errors_by_status["connect"] += 1
                failure = f"connection failed ({type(err).__name__}: {err})"
            else:
                if response.status_code < 400:
                    stats.latencies_s.append(time.perf_counter() - start)
                    return json_answer(response)
                stats.errors_by_status[str(response.status_code)] += 1
                failure = f"HTTP {response.status_code}: {server_message(response)}"
                if not retryable(response.status_code):
                    raise RequestFailed(failure)
                wait_hint = retry_after_seconds(response.headers)
                if response.status_code == 429 and wait_hint:
                    throttle.pause(min(wait_hint, policy.max_backoff_s))
        if retry >= policy.max_retries:
            raise RequestFailed(f"{failure} (gave up after {retry} retries)")
        retry += 1
        stats.retries += 1
        wait = policy.delay(retry, wait_hint)
        log.debug("%s; retry %d in %.2f s", failure, retry, wait)
        await asyncio.sleep(wait)
