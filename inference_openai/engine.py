"""Any OpenAI-compatible endpoint behind the engine interface (`engine=openai`).

The requests go out from an asyncio loop on a background thread, at most
`engine.max_concurrency` at a time; `generate` and `loglikelihood` stay plain iterators: they take
requests as they come (decoding prompts on the caller's thread), hand them to the loop, and yield
each result from a queue as soon as its answer is in. Scoring is in inference_openai/scoring.py.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import Future
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import httpx

from inference_core.config import ConfigError
from inference_core.engine import (Completion, GenerationRequest, SamplingSettings,
                                   ScoringRequest, TokenScores)
from inference_core.model.adapters import Adapter
from inference_openai.payload import (PATHS, BodyOptions, Sample, chat_body, completions_body,
                                      samples_of, unsent_sampling)
from inference_openai.probe import auth_headers, served_model
from inference_openai.scoring import Scorer, check_request
from inference_openai.settings import EndpointSettings, read_settings
from inference_openai.stats import EndpointStats
from inference_openai.transport import RequestFailed, RetryPolicy, Throttle, post_json

log = logging.getLogger(__name__)
# httpx logs one INFO line per request: tens of thousands in a run.
logging.getLogger("httpx").setLevel(logging.WARNING)

Prompt = str | Sequence[int] | Sequence[Mapping[str, str]]


class OpenAIEngine:
    name = "openai"

    def __init__(self, model_path: str, engine_cfg: Mapping[str, Any], seed: int,
                 adapters: Sequence[Adapter] = ()) -> None:
        if adapters:
            raise ConfigError("engine=openai asks the served model only: serve the LoRA adapter "
                              "(`vllm serve BASE --enable-lora --lora-modules NAME=DIR`) and set "
                              "engine.model=NAME with model.path=BASE")
        start = time.perf_counter()
        self.settings = read_settings(engine_cfg)
        self.served = served_model(self.settings)  # ConfigError (exit 2) before any work
        check_window(engine_cfg.get("max_model_len"), self.served.max_model_len)
        s = self.settings
        is_vllm = self.served.owned_by == "vllm"
        self.options = BodyOptions(
            self.served.model_id, s.api,
            is_vllm if s.extended_sampling is None else s.extended_sampling,
            s.send_seed, s.extra_body)
        # None: not known yet (auto), until an answer brings fewer samples than asked for.
        self.honours_n = s.supports_n
        self.model_path = model_path
        self.tokenizer = load_tokenizer(model_path) if s.api == "completions" and \
            s.prompt_form == "text" else None
        self.seed = seed
        self.counters = EndpointStats()
        self.unsent: list[str] = []
        self.scorer: Scorer | None = None  # made (and the endpoint probed) on first use
        self.loop, self.thread = start_loop()
        self.client, self.throttle = self.on_loop(self.open_client()).result()
        self.policy = RetryPolicy(s.max_retries, s.backoff_s, s.max_backoff_s, s.timeout_s)
        log.info("engine=openai: %s at %s (%s API, %d at a time)", self.served.model_id,
                 s.endpoint, s.api, s.max_concurrency)
        self.load_seconds = time.perf_counter() - start

    def on_loop(self, coroutine: Any) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def open_client(self) -> tuple[httpx.AsyncClient, Throttle]:
        s = self.settings
        limits = httpx.Limits(max_connections=s.max_concurrency,
                              max_keepalive_connections=s.max_concurrency)
        client = httpx.AsyncClient(
            base_url=s.base_url + "/", headers=auth_headers(s.api_key()), limits=limits,
            timeout=httpx.Timeout(s.timeout_s, connect=s.connect_timeout_s))
        return client, Throttle(s.max_concurrency)

    def generate(self, requests: Iterable[GenerationRequest],
                 sampling: SamplingSettings) -> Iterator[Completion]:
        """Send requests as they arrive; yield each completion once its answers are in."""
        self.note_unsent(sampling)

        def submit(request: GenerationRequest) -> Future:
            own = request.sampling_or(sampling)
            return self.on_loop(self.complete(request, self.prompt_of(request), own))

        yield from self.serve(requests, submit, lambda r, done: self.to_completion(r, *done))

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        """Score requests as they arrive (one echo prefill each); the first one probes the
        endpoint, so a run without scoring requests never pays for it."""

        def submit(request: ScoringRequest) -> Future:
            check_request(request)
            return self.on_loop(self.scoring().score(request))

        yield from self.serve(requests, submit, lambda r, scores: scores)

    def scoring(self) -> Scorer:
        """The scorer, probed once before its first request (ConfigError: exit 2)."""
        if self.scorer is None:
            async def post(body: dict[str, Any]) -> dict[str, Any]:
                return await post_json(self.client, PATHS["completions"], body, self.policy,
                                       self.throttle, self.counters)

            scorer = Scorer(post, self.options, self.counters, self.settings.endpoint)
            self.on_loop(scorer.probe()).result()
            log.info("engine=openai: %s scores prompts (next tokens: %s)",
                     self.settings.endpoint, scorer.method())
            self.scorer = scorer
        return self.scorer

    def serve(self, requests: Iterable[Any], submit: Callable[[Any], Future],
              finish: Callable[[Any, Any], Any]) -> Iterator[Any]:
        """Submit requests as they arrive; yield `finish(request, answer)` as each is done."""
        finished: queue.Queue[Future] = queue.Queue()
        pending: dict[Future, Any] = {}
        take = ready_requests(requests)
        more = True
        try:
            while more or pending:
                batch = take() if more else None
                if batch is None:
                    more = False
                for request in batch or ():
                    future = submit(request)
                    pending[future] = request
                    future.add_done_callback(finished.put)
                # Wait a moment for answers only when no new request came: a feed still filling
                # is polled again soon; after its end, the wait is for answers alone.
                wait = 0.0 if batch else (0.05 if more else 0.2)
                yield from self.take_finished(finished, pending, wait, finish)
        finally:
            for future in pending:  # the consumer stopped early (a signal): drop what is left
                future.cancel()

    def take_finished(self, finished: queue.Queue, pending: dict[Future, Any], wait_s: float,
                      finish: Callable[[Any, Any], Any]) -> Iterator[Any]:
        """Every result ready now, after waiting up to `wait_s` for the first."""
        while True:
            try:
                # A bounded wait keeps the main thread responsive to signals.
                future = finished.get(timeout=wait_s) if wait_s else finished.get_nowait()
            except queue.Empty:
                return
            wait_s = 0.0
            request = pending.pop(future, None)
            if request is None or future.cancelled():
                continue
            yield finish(request, future.result())

    def prompt_of(self, request: GenerationRequest) -> Prompt:
        """What the endpoint is sent: chat messages, the rendered text, or the token ids."""
        if self.settings.api == "chat":
            if not request.messages:
                raise ConfigError("engine.api=chat needs each request's chat messages, which this "
                                  "pipeline does not pass yet: use engine.api=completions")
            return request.messages
        if self.tokenizer is None:
            return request.token_ids
        # Special tokens stay: they are the chat template's markup the checkpoint expects.
        return self.tokenizer.decode(list(request.token_ids), skip_special_tokens=False)

    async def complete(self, request: GenerationRequest, prompt: Prompt,
                       sampling: SamplingSettings) -> tuple[list[Sample], str | None]:
        """All samples of one request: n in one call where the server honours it, else fan out."""
        n, samples, error = request.num_samples, [], None
        # The request's own seed where the pipeline gives one (sample i: seed + i), else the run's.
        seed = getattr(request, "seed", None)
        seed = self.seed if seed is None else seed
        try:
            if self.honours_n is not False or n == 1:
                samples = await self.ask(prompt, sampling, n, seed)
                if len(samples) < n and self.honours_n is None:
                    log.warning("%s gave %d of n=%d samples: making them with one request each "
                                "from now on", self.settings.endpoint, len(samples), n)
                    self.honours_n = False
            missing = n - len(samples)
            if missing > 0:
                self.counters.fanout_requests += missing
                answers = await asyncio.gather(
                    *(self.ask(prompt, sampling, 1, seed + len(samples) + i)
                      for i in range(missing)), return_exceptions=True)
                for answer in answers:
                    if isinstance(answer, RequestFailed):
                        error = str(answer)
                    elif isinstance(answer, BaseException):
                        raise answer
                    else:
                        samples.extend(answer)
        except RequestFailed as failed:
            error = str(failed)
        if error is not None:
            self.counters.failed_requests += 1
            log.warning("request %s failed: %s", request.request_id, error)
        return samples[:n], error

    async def ask(self, prompt: Prompt, sampling: SamplingSettings, n: int,
                  seed: int) -> list[Sample]:
        if self.settings.api == "chat":
            body = chat_body(prompt, sampling, n, seed, self.options)  # type: ignore[arg-type]
        else:
            body = completions_body(prompt, sampling, n, seed, self.options)  # type: ignore[arg-type]
        answer = await post_json(self.client, PATHS[self.settings.api], body, self.policy,
                                 self.throttle, self.counters)
        self.counters.usage(answer)
        samples = samples_of(answer, self.settings.api)
        if not samples:
            raise RequestFailed(f"the answer has no choices: {str(answer)[:200]}")
        return samples

    def to_completion(self, request: GenerationRequest, samples: list[Sample],
                      error: str | None) -> Completion:
        return Completion(
            request_id=request.request_id,
            texts=tuple(s.text for s in samples),
            finish_reasons=tuple(s.finish_reason for s in samples),
            output_tokens=tuple(self.count_tokens(s) for s in samples),
            prompt_tokens=len(request.token_ids),
            stop_reasons=tuple(s.stop_reason for s in samples),
            error=error,
        )

    def count_tokens(self, sample: Sample) -> int:
        """The answer's own count where it has one, else the local tokenizer's."""
        if sample.tokens is not None:
            return sample.tokens
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.model_path)
        return len(self.tokenizer(sample.text, add_special_tokens=False)["input_ids"])

    def note_unsent(self, sampling: SamplingSettings) -> None:
        if self.options.extended_sampling:
            return
        self.unsent = unsent_sampling(sampling)
        if self.unsent:
            log.warning("engine=openai: %s not sent (the endpoint is not vLLM; set "
                        "engine.extended_sampling=true if it takes them)", ", ".join(self.unsent))

    def stats(self) -> dict[str, Any]:
        extras = {"server": self.served.owned_by,
                  "server_max_model_len": self.served.max_model_len,
                  "extended_sampling": self.options.extended_sampling,
                  "n_per_request": self.honours_n is not False,
                  "per_request_seeds": self.options.send_seed,
                  "sampling_not_sent": self.unsent,
                  "next_token_scoring": self.scorer.method() if self.scorer else None}
        return self.counters.as_dict(self.settings, self.served.model_id, extras)

    def close(self) -> None:
        if not self.loop.is_running():
            return
        self.on_loop(self.client.aclose()).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def ready_requests(requests: Iterable[GenerationRequest]) -> Callable[[], list | None]:
    """`take()`: the requests available now ([] if none yet), None once there are no more.

    A request feed that is still being filled (its `take_ready`) is polled without waiting;
    any other iterable is taken a slice at a time, so a lazy one is never drained up front.
    """
    take_ready = getattr(requests, "take_ready", None)
    if take_ready is not None:
        return lambda: take_ready(False)
    remaining = iter(requests)

    def take() -> list | None:
        return list(islice(remaining, 64)) or None

    return take


def start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """The event loop every request runs on, in a daemon thread (the caller's stays free)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="openai-engine", daemon=True)
    thread.start()
    return loop, thread


def check_window(ours: Any, served: int | None) -> None:
    if served is not None and ours and int(ours) > served:
        raise ConfigError(f"engine.max_model_len={ours} is beyond the served model's "
                          f"max_model_len={served} (from GET /models): set "
                          f"model.max_model_len={served} or less")


def load_tokenizer(model_path: str) -> Any:
    """The served model's tokenizer from model.path: decodes prompts and counts samples."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.path={model_path}: no tokenizer to decode prompts with "
                          f"({err}); point it at the served model's folder, or set "
                          f"engine.prompt=token_ids for a vLLM server") from None
