"""A small OpenAI-style server on 127.0.0.1 that misbehaves on purpose (stdlib only).

The first token id of a completions prompt picks the fault (see FAULTS); each prompt's attempts
are counted, so a fault can hit the first attempts and then let the request through. The server
stops by itself after `lifetime_s`, whatever the test does.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

MODEL_ID = "fault-model"
OK, RATE_LIMITED, SERVER_ERROR, SLOW, BAD_REQUEST, SHORT_N, NOT_JSON, NO_CHOICES = range(1, 9)
# first token id -> (attempts that fail, how)
FAULTS = {RATE_LIMITED: 2, SERVER_ERROR: 1, SLOW: 1, BAD_REQUEST: 10**9}
BAD_REQUEST_MESSAGE = "This model's maximum context length is 2048 tokens (fault server)"
ECHO_REFUSED_MESSAGE = "echo is not supported with logprobs for this model (fault server)"
# What the server does with `echo` (scoring requests): answer as if it had not been asked (a plain
# generation, no prompt log-probabilities), refuse it with a 400, or score the prompt.
ECHO_MODES = ("ignore", "refuse", "score")


class FaultServer:
    def __init__(self, retry_after: str = "1", slow_s: float = 1.5, lifetime_s: float = 60.0,
                 reject_prompts: int = 0, echo: str = "ignore") -> None:
        assert echo in ECHO_MODES
        self.echo = echo
        self.retry_after = retry_after
        # The first k distinct prompts get a 400 every time (as a too-long prompt would).
        self.reject_prompts = reject_prompts
        self.rejected: set[tuple[int, ...]] = set()
        self.slow_s = slow_s
        self.attempts: Counter = Counter()
        self.auth_headers: list[str | None] = []
        self.bodies: list[dict[str, Any]] = []
        # (monotonic time, first token id, status) of every completions request, as it arrived.
        self.arrivals: list[tuple[float, int, int]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.stopper = threading.Timer(lifetime_s, self.stop)
        self.stopper.daemon = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        self.stopper.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any], float]:
        """(status, headers, JSON body, seconds to wait first) for one completions request."""
        arrived = time.monotonic()
        status, headers, payload, wait = self.decide(body)
        with self.lock:
            self.arrivals.append((arrived, body["prompt"][0], status))
        return status, headers, payload, wait

    def decide(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any], float]:
        prompt = tuple(body["prompt"])
        with self.lock:
            self.attempts[prompt] += 1
            attempt = self.attempts[prompt]
            self.bodies.append(body)
        kind = prompt[0]
        with self.lock:
            if prompt not in self.rejected and len(self.rejected) < self.reject_prompts:
                self.rejected.add(prompt)
            refused = prompt in self.rejected
        if refused:
            return 400, {}, error(BAD_REQUEST_MESSAGE), 0.0
        if body.get("echo") and self.echo == "refuse":
            return 400, {}, error(ECHO_REFUSED_MESSAGE), 0.0
        if attempt <= FAULTS.get(kind, 0):
            if kind == RATE_LIMITED:
                return 429, {"Retry-After": self.retry_after}, error("rate limited"), 0.0
            if kind == SERVER_ERROR:
                return 500, {}, error("internal error"), 0.0
            if kind == SLOW:
                return 200, {}, completion(prompt, 1), self.slow_s
            return 400, {}, error(BAD_REQUEST_MESSAGE), 0.0
        if kind == NOT_JSON:  # a proxy's error page with a 200
            return 200, {}, b"<html>gateway</html>", 0.0
        if kind == NO_CHOICES:
            return 200, {}, {"object": "text_completion", "choices": []}, 0.0
        if body.get("echo") and self.echo == "score":
            return 200, {}, scored(prompt, int(body.get("max_tokens") or 0)), 0.0
        n = 1 if kind == SHORT_N else int(body.get("n", 1))
        return 200, {}, completion(prompt, n, attempt), 0.0

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

            def do_GET(self) -> None:
                server.auth_headers.append(self.headers.get("Authorization"))
                self.send(200, {"object": "list", "data": [
                    {"id": MODEL_ID, "object": "model", "owned_by": "fault-server"}]}, {})

            def do_POST(self) -> None:
                server.auth_headers.append(self.headers.get("Authorization"))
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, headers, payload, wait = server.answer(body)
                time.sleep(wait)
                self.send(status, payload, headers)

        return Handler


def error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "code": 400}}


def completion(prompt: tuple[int, ...], n: int, attempt: int = 1) -> dict[str, Any]:
    choices = [{"index": i, "text": f"sample {i} of {prompt[:3]} attempt {attempt}",
                "finish_reason": "stop", "stop_reason": None,
                # vLLM's return_token_ids answer: the engine counts tokens from it.
                "token_ids": [7] * 5} for i in range(n)]
    return {"id": "cmpl-1", "object": "text_completion", "model": MODEL_ID, "choices": choices,
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 5 * n,
                      "total_tokens": len(prompt) + 5 * n}}


TOP_LOGPROB = -0.1


def fake_logprob(token_id: int) -> float:
    """The fake model's log-probability of a token wherever it stands: the top one (greedy)
    where token_id % 4 == 0, else below it."""
    return TOP_LOGPROB - 0.5 * (token_id % 4)


def scored(prompt: tuple[int, ...], max_tokens: int) -> dict[str, Any]:
    """An echo answer as OpenAI's legacy API gives it: tokens as strings, the first entry null,
    then `max_tokens` generated entries after the prompt's."""
    tokens = [f"t{x}" for x in prompt] + ["gen"] * max_tokens
    values: list[float | None] = [None] + [fake_logprob(x) for x in prompt[1:]]
    tops: list[dict[str, float] | None] = [None] + [
        {f"t{x}": fake_logprob(x), "top": TOP_LOGPROB} if x % 4 else {f"t{x}": TOP_LOGPROB}
        for x in prompt[1:]]
    values += [TOP_LOGPROB] * max_tokens
    tops += [{"gen": TOP_LOGPROB}] * max_tokens
    logprobs = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                "text_offset": list(range(len(tokens)))}
    return {"id": "cmpl-echo", "object": "text_completion", "model": MODEL_ID,
            "choices": [{"index": 0, "text": " ".join(tokens), "logprobs": logprobs,
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": max_tokens,
                      "total_tokens": len(prompt) + max_tokens}}
