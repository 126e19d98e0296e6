"""generate()'s token rows into Completions with vLLM's accounting (text, reason, tokens, stop)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from inference_core.engine import Completion, GenerationRequest, SamplingSettings


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str
    output_tokens: int
    stop_reason: str | None


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


class RowReader:
    """Reads one batch's generated rows (tokens after the prompt) as vLLM reports samples."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], pad_id: int) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.pad_id = pad_id

    def completions(self, batch: Sequence[GenerationRequest], generated: Any, n: int,
                    sampling: SamplingSettings) -> list[Completion]:
        """`generated`: (rows, steps) token tensor, `len(generated) // len(batch)` rows a request
        (1 for greedy, whose one sample stands for all n)."""
        samples = self.samples(generated, sampling)
        per_request = len(samples) // len(batch)
        out = []
        for i, request in enumerate(batch):
            mine = (samples[i * per_request:(i + 1) * per_request] * n)[:n]
            out.append(Completion(
                request_id=request.request_id, texts=tuple(s.text for s in mine),
                finish_reasons=tuple(s.finish_reason for s in mine),
                output_tokens=tuple(s.output_tokens for s in mine),
                prompt_tokens=len(request.token_ids),
                stop_reasons=tuple(s.stop_reason for s in mine)))
        return out

    def samples(self, generated: Any, sampling: SamplingSettings) -> list[Sample]:
        import torch

        generated = generated.cpu()
        # A row ends at its EOS or, once stopped while others went on, at the padding after it.
        ends_at = torch.isin(generated, torch.tensor(sorted(self.eos_ids | {self.pad_id})))
        ends = torch.where(ends_at.any(-1), ends_at.int().argmax(-1),
                           generated.shape[1]).tolist()
        rows = [row[:end] for row, end in zip(generated.tolist(), ends)]
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        full = generated.shape[1]
        return [self._sample(row, text, end < full and int(generated[i, end]) in self.eos_ids,
                             sampling)
                for i, (row, text, end) in enumerate(zip(rows, texts, ends))]

    def _sample(self, row: list[int], text: str, at_eos: bool,
                sampling: SamplingSettings) -> Sample:
        cut = first_stop(text, sampling.stop)
        if cut is not None:  # vLLM leaves the stop string out of the text but counts its tokens
            stop = next(s for s in sampling.stop if s and text.startswith(s, cut))
            return Sample(text[:cut], "stop", self.tokens_to_stop(row, sampling.stop), stop)
        if len(row) >= sampling.max_tokens:
            return Sample(text, "length", len(row), None)
        # vLLM counts the EOS token among the output tokens.
        return Sample(text, "stop", len(row) + (1 if at_eos else 0), None)

    def tokens_to_stop(self, tokens: list[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens whose text holds a stop string.

        generate() stops a row at the token that completes a stop string, so that is nearly
        always the last one: one decode confirms it; otherwise a binary search over decodes.
        """
        if first_stop(self._decode(tokens[:-1]), stops) is None:
            return len(tokens)
        low, high = 1, len(tokens) - 1
        while low < high:
            mid = (low + high) // 2
            if first_stop(self._decode(tokens[:mid]), stops) is None:
                low = mid + 1
            else:
                high = mid
        return high

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)
