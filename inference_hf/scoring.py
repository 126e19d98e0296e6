"""The Transformers engine's `loglikelihood`: one forward per length-sorted batch, no decoding.

The decoder alone runs over a left-padded batch (the mask and positions generation uses) and
returns hidden states; only the positions that predict a target token, and the last one where
next-token options are asked, go through the LM head, a chunk of rows at a time. The logits held
at once are then one chunk (HEAD_CHUNK_BYTES of float32), never batch x length x vocab.
Batches are planned as generation's are (batches.py: longest first, one adapter each, under a
padded-token budget) and an out-of-memory batch is split in halves; a request that does not fit
alone gets an error and the others go on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from inference_core.engine import GenerationRequest, ScoringRequest, TokenScores
from inference_core.errors import ConfigError
from inference_hf.batches import left_padded, plan_batches
from inference_hf.budget import auto_budget, is_out_of_memory, release_memory

log = logging.getLogger(__name__)

# float32 logits of one head chunk; its log-softmax and the model-dtype logits make ~2.5x that.
HEAD_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Head:
    """A causal LM cut after its decoder: the decoder, the LM head, and what the model's own
    forward does to the head's output (Granite's logits_scaling, Gemma's final softcap)."""

    model_class: str
    decoder: Any
    lm_head: Any
    vocab: int
    scaling: float | None
    softcap: float | None

    def logits(self, hidden: Any) -> Any:
        """float32 logits of hidden states [rows, hidden], as the model's forward computes them."""
        logits = self.lm_head(hidden).float()
        if self.scaling:
            logits = logits / self.scaling
        if self.softcap:
            logits = (logits / self.softcap).tanh() * self.softcap
        return logits


def model_head(model: Any) -> Head:
    """The decoder and head of a causal LM, through a peft wrapper (its LoRA layers sit inside
    the wrapped model, so calling its decoder applies the active adapter)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm_head = causal.get_output_embeddings()
    text = causal.config.get_text_config(decoder=True)
    vocab = getattr(lm_head, "out_features", None) or lm_head.weight.shape[0]
    return Head(type(causal).__name__, causal.get_decoder(), lm_head, int(vocab),
                getattr(text, "logits_scaling", None),
                getattr(text, "final_logit_softcapping", None))


def check_head(model: Any, head: Head, ids: Sequence[int]) -> None:
    """Refuse a model whose forward does more after its head than Head reproduces: its own
    logits at the last of a few tokens must be the ones computed here."""
    import torch

    tokens = torch.tensor([list(ids)], device=model.device)
    own = model(input_ids=tokens, logits_to_keep=1).logits[0, -1].float()
    ours = head.logits(head.decoder(input_ids=tokens).last_hidden_state[0, -1:])[0]
    # A scale or cap left out is off by a factor; rounding in bf16 is a few parts in a thousand.
    if own.shape != ours.shape or (own - ours).abs().max() > 1e-2 * own.abs().max() + 1e-4:
        raise ConfigError(f"engine=hf cannot score {head.model_class}: its forward "
                          "changes the LM head's logits in a way scoring.py does not reproduce")


def invalid(request: ScoringRequest, vocab: int) -> str | None:
    """Why a request cannot be scored (one line), or None."""
    if not 1 <= request.target_start < len(request.token_ids):
        return (f"request {request.request_id}: target_start {request.target_start} is not in "
                f"1..{len(request.token_ids) - 1} ({len(request.token_ids)} tokens)")
    for field in ("token_ids", "next_token_ids"):
        ids = getattr(request, field)
        if ids and not 0 <= min(ids) <= max(ids) < vocab:
            return f"request {request.request_id}: {field} outside the vocabulary (0..{vocab - 1})"
    return None


def head_scores(head: Head, hidden: Any, wanted: Any) -> tuple[Any, Any]:
    """Log-probabilities of `wanted` ids [rows, k] and the argmax, per row of hidden states,
    through the head a chunk of rows at a time."""
    import torch

    rows = max(1, HEAD_CHUNK_BYTES // (4 * head.vocab))
    picked, best = [], []
    for start in range(0, len(hidden), rows):
        logprobs = head.logits(hidden[start:start + rows]).log_softmax(-1)
        picked.append(logprobs.gather(1, wanted[start:start + rows]))
        best.append(logprobs.argmax(-1))
        del logprobs  # the next chunk's logits are not allocated beside this one's
    return torch.cat(picked).cpu(), torch.cat(best).cpu()


def score_batch(head: Head, batch: Sequence[ScoringRequest], pad_id: int,
                device: str) -> list[TokenScores]:
    """One decoder forward over the batch; the head at target positions only."""
    import torch

    ids, mask = (t.to(device) for t in left_padded(batch, pad_id))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    hidden = head.decoder(input_ids=ids, attention_mask=mask, position_ids=positions,
                          use_cache=False).last_hidden_state
    rows, cols, targets = target_positions(batch, ids.shape[1])
    wanted = torch.tensor(targets, device=device).unsqueeze(1)
    logprobs, best = head_scores(head, hidden[rows, cols], wanted)
    greedy = (best == torch.tensor(targets)).tolist()
    logprobs = logprobs[:, 0].tolist()
    scores, at = [], 0
    for request, after in zip(batch, next_token_scores(head, batch, hidden[:, -1])):
        span = slice(at, at + request.target_tokens)
        at = span.stop
        scores.append(TokenScores(request.request_id, tuple(logprobs[span]), tuple(greedy[span]),
                                  after))
    return scores


def target_positions(batch: Sequence[ScoringRequest],
                     width: int) -> tuple[list[int], list[int], list[int]]:
    """(row, column) of each hidden state that predicts a target token, and that token, request
    after request: in a left-padded row of n tokens, token j sits at column width - n + j and
    is predicted by the column before it."""
    rows, cols, targets = [], [], []
    for r, request in enumerate(batch):
        first = width - len(request.token_ids)
        cols.extend(range(first + request.target_start - 1, width - 1))
        rows.extend([r] * request.target_tokens)
        targets.extend(request.token_ids[request.target_start:])
    return rows, cols, targets


def next_token_scores(head: Head, batch: Sequence[ScoringRequest],
                      last: Any) -> list[tuple[float, ...]]:
    """Each request's next_token_ids scored at its last position (rows of `last`)."""
    import torch

    asking = [r for r, request in enumerate(batch) if request.next_token_ids]
    out: list[tuple[float, ...]] = [()] * len(batch)
    if not asking:
        return out
    k = max(len(batch[r].next_token_ids) for r in asking)
    wanted = torch.zeros(len(asking), k, dtype=torch.long)  # short rows padded with id 0
    for i, r in enumerate(asking):
        wanted[i, :len(batch[r].next_token_ids)] = torch.tensor(batch[r].next_token_ids)
    logprobs, _ = head_scores(head, last[asking], wanted.to(last.device))
    for i, r in enumerate(asking):
        out[r] = tuple(logprobs[i, :len(batch[r].next_token_ids)].tolist())
    return out


def plan(requests: Sequence[ScoringRequest], max_batch_tokens: int,
         max_batch_size: int) -> list[list[ScoringRequest]]:
    """generation's planner (batches.py) with no output tokens: rows x longest <= the budget."""
    rows = [GenerationRequest(str(i), r.token_ids, 1, r.adapter) for i, r in enumerate(requests)]
    return [[requests[int(row.request_id)] for row in batch]
            for batch in plan_batches(rows, 0, max_batch_tokens, max_batch_size)]


class Scorer:
    """The engine's scoring state: its budget, its counters, its out-of-memory ceiling."""

    def __init__(self, engine: Any) -> None:
        # The HFEngine (engine.py imports this module, not the other way round). The model is
        # read from it per call: close() must free it.
        self.engine = engine
        self.max_batch_tokens: int | None = None
        self.head_checked = False
        self.batches = 0
        self.tokens = 0
        self.oom_splits = 0
        self.oom_ceiling: int | None = None

    def score(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        head = model_head(self.engine.model)
        valid, refused = [], []
        for request in requests:  # taken whole: batches are planned over every request
            error = invalid(request, head.vocab)
            if error:
                log.warning("%s", error)
                refused.append(TokenScores(request.request_id, (), (), error=error))
            else:
                valid.append(request)
        if valid and not self.head_checked:
            self._check_head(head, valid[0].token_ids[:16])
        yield from refused
        batches = plan(valid, self._budget(), self.engine.max_batch_size)
        log.info("%d scoring requests in %d batches", len(valid), len(batches))
        for batch in batches:
            yield from self._fitting(head, batch)

    def _check_head(self, head: Head, ids: Sequence[int]) -> None:
        import torch

        with torch.inference_mode(), self.engine._adapter(None):
            check_head(self.engine.model, head, ids)
        self.head_checked = True

    def _budget(self) -> int:
        engine = self.engine
        if engine.max_batch_tokens is not None:
            return engine.max_batch_tokens  # set in the config (auto leaves it None)
        if self.max_batch_tokens is None:
            # Its own: generation's auto budget depends on num_samples. One row a prompt holds
            # no KV cache past its layer, so generation's estimate for one sample bounds it.
            self.max_batch_tokens = auto_budget(self.engine.model, self.engine.device, 1
                                                ).max_batch_tokens
            log.info("scoring max_batch_tokens: auto = %d", self.max_batch_tokens)
        return self.max_batch_tokens

    def _fitting(self, head: Head, batch: list[ScoringRequest]) -> list[TokenScores]:
        """The batch, or its halves where it does not fit; alone and still too big: an error."""
        tokens = len(batch) * max(len(r.token_ids) for r in batch)  # what plan() counts
        if len(batch) > 1 and self.oom_ceiling is not None and tokens > self.oom_ceiling:
            half = len(batch) // 2
            return self._fitting(head, batch[:half]) + self._fitting(head, batch[half:])
        try:
            return self._run(head, batch)
        except Exception as error:  # noqa: BLE001 - out of memory only; anything else raised
            if not is_out_of_memory(error):
                raise
            log.warning("out of memory scoring %d requests (%d padded tokens)", len(batch), tokens)
        # Out of the except block: its traceback held the failed batch's tensors.
        release_memory()
        if len(batch) == 1:
            error = f"out of memory scoring request {batch[0].request_id} alone ({tokens} tokens)"
            return [TokenScores(batch[0].request_id, (), (), error=error)]
        self.oom_splits += 1
        self.oom_ceiling = min(self.oom_ceiling or tokens, tokens // 2)
        return self._fitting(head, batch)

    def _run(self, head: Head, batch: list[ScoringRequest]) -> list[TokenScores]:
        import torch

        with torch.inference_mode(), self.engine._adapter(batch[0].adapter):
            scores = score_batch(head, batch, self.engine.pad_id, self.engine.device)
        self.batches += 1
        self.tokens += sum(r.target_tokens for r in batch)
        return scores

    def stats(self) -> dict[str, Any]:
        return {"scoring_batches": self.batches, "scored_tokens": self.tokens,
                "scoring_oom_splits": self.oom_splits,
                # None where the config's max_batch_tokens is used.
                "scoring_max_batch_tokens_auto": self.max_batch_tokens}
