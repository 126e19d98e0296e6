"""Requests handed from the prompt-building thread to the engine while both work.

The engine starts loading while prompts are built, and requests flow in as each user's prompts
are ready. Iterating a feed blocks until the next request (what a simple engine needs);
`take_ready` returns what is there now without waiting, so an engine that is busy generating
(vLLM between steps) never waits for Python.
"""
from __future__ import annotations

import queue
from typing import Callable, Iterator

from inference_core.engine import GenerationRequest

_END = object()


class RequestFeed:
    """A one-producer, one-consumer stream of requests; the producer ends it with close()."""

    def __init__(self, on_take: Callable[[list[GenerationRequest]], None] | None = None) -> None:
        """`on_take` sees every batch of requests the engine takes, as it takes them."""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._finished = False
        self._on_take = on_take

    def put(self, requests: list[GenerationRequest]) -> None:
        for request in requests:
            self._queue.put(request)

    def close(self, error: BaseException | None = None) -> None:
        """No more requests; an error of the producer is raised in the consumer."""
        self._queue.put(error if error is not None else _END)

    def take_ready(self, block: bool) -> list[GenerationRequest] | None:
        """Every request available now (waiting for one when `block`); None once the feed ended."""
        if self._finished:
            return None
        taken: list[GenerationRequest] = []
        try:
            item = self._queue.get(block=block)
            while True:
                if item is _END:
                    self._finished = True
                    break
                if isinstance(item, BaseException):
                    self._finished = True
                    raise item
                taken.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if taken and self._on_take is not None:
            self._on_take(taken)
        return None if self._finished and not taken else taken

    def __iter__(self) -> Iterator[GenerationRequest]:
        while (batch := self.take_ready(block=True)) is not None:
            yield from batch
