"""The engines agree on what a checkpoint's training loss on held-out users is: vLLM (the CPU
build), Transformers in one process and under torchrun (2 ranks), an OpenAI-compatible server (the
real local one), and a plain Transformers forward pass computed here from the very token ids vLLM
scored.

Tolerance: both engines run the embedded model in bfloat16 (its config's dtype) on a CPU that
computes in bfloat16 natively, float32 on one that does not; the forward here runs float32.
bfloat16 keeps 8 bits of mantissa, so a logit near 20 is off by up to ~0.08 and one token's
log-probability by up to ~0.2 (0.14 and 0.23 measured on random sequences); those errors do not
add up over an item's tokens, so an item's mean NLL per token agrees to within 0.05 (float32
against float32 agrees to ~1e-5).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest

from conftest import REPO, compose
from inference_core.engine import ScoringRequest, TokenScores
from inference_core.run.job import prepare_job
from inference_core.run.pipeline import run_job, start_job_engine
from inference_vllm.bench.rows import BorrowedEngine
from openai_server import KEY_ENV, SERVED_ID
from test_vllm_pipeline import load

pytestmark = pytest.mark.engine
ITEMS = ["dataset=DMSC", "prompt=tagged", "dataset.holdout=last", "mode=likelihood",
         "max_users=4", "evaluate=false", "report=false", "model.max_model_len=1024"]
MEAN_NLL_TOLERANCE = 0.05


class Recording(BorrowedEngine):
    """A lent engine that keeps the scoring requests it served."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.scored: list[ScoringRequest] = []
        self.__dict__.pop("serve_both", None)  # scoring only here: through loglikelihood

    def loglikelihood(self, requests: Iterable[ScoringRequest]) -> Iterator[TokenScores]:
        def kept() -> Iterator[ScoringRequest]:
            for request in requests:
                self.scored.append(request)
                yield request
        return self.engine.loglikelihood(kept())


def figures(out: Path) -> dict[tuple[Any, str], dict[str, Any]]:
    return {(u["user_hash"], "{record}/{collection}/{item}".format(**i["location"])):
            i["likelihood"] for u in map(load, (out / "users").glob("*.json")) for i in u["items"]}


@pytest.fixture(scope="module")
def vllm_scored(vllm_engine: Any, tmp_path_factory: pytest.TempPathFactory,
                ) -> tuple[Path, list[ScoringRequest]]:
    recording = Recording(vllm_engine.engine)
    out = run_job(prepare_job(compose(f"output_dir={tmp_path_factory.mktemp('vllm')}", *ITEMS)),
                  lambda job, adapters: recording)
    return out, recording.scored


def plain_forward_nll(model_path: Path, request: ScoringRequest) -> tuple[float, list[bool]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = plain_forward_nll.__dict__.setdefault(
        "model", AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32))
    ids = list(request.token_ids)
    with torch.no_grad():
        logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    rows = range(request.target_start, len(ids))
    nll = -sum(logprobs[p - 1, ids[p]].item() for p in rows) / len(rows)
    return nll, [logprobs[p - 1].argmax().item() == ids[p] for p in rows]


def test_vllm_agrees_with_a_plain_forward_of_the_same_ids(vllm_scored: Any, model_path: Path,
                                                          tokenizer: Any) -> None:
    out, scored = vllm_scored
    by_reference = {i["reference"].strip(): i["likelihood"]
                    for u in map(load, (out / "users").glob("*.json")) for i in u["items"]}
    assert len(scored) == len(by_reference) >= 4
    for request in scored:
        target = tokenizer.decode(request.token_ids[request.target_start:])
        assert target.startswith("[ANSWER]\n") and target.endswith("\n[/ANSWER]<|im_end|>")
        engine = by_reference[target[len("[ANSWER]\n"):-len("\n[/ANSWER]<|im_end|>")]]
        nll, _ = plain_forward_nll(model_path, request)
        assert engine["target_tokens"] == request.target_tokens
        assert abs(engine["nll_per_token"] - nll) < MEAN_NLL_TOLERANCE


def test_transformers_in_one_process_agrees_with_vllm(vllm_scored: Any, tmp_path: Path) -> None:
    out, _ = vllm_scored
    job = prepare_job(compose("engine=hf", f"output_dir={tmp_path / 'hf'}", *ITEMS))
    hf = figures(run_job(job, start_job_engine))
    assert hf.keys() == figures(out).keys()
    for key, ours in figures(out).items():
        assert hf[key]["target_tokens"] == ours["target_tokens"]
        assert abs(hf[key]["nll_per_token"] - ours["nll_per_token"]) < MEAN_NLL_TOLERANCE


def test_an_openai_compatible_server_agrees_with_vllm(vllm_scored: Any, vllm_server: str,
                                                      with_key: None, tmp_path: Path) -> None:
    """The real local server (`vllm serve`, bf16 too), asked through engine=openai."""
    out, _ = vllm_scored
    job = prepare_job(compose("engine=openai", f"engine.base_url={vllm_server}",
                              f"engine.model={SERVED_ID}", f"engine.api_key_env={KEY_ENV}",
                              f"output_dir={tmp_path / 'served'}", *ITEMS))
    served = figures(run_job(job, start_job_engine))
    assert served.keys() == figures(out).keys()
    for key, ours in figures(out).items():
        assert served[key]["target_tokens"] == ours["target_tokens"]
        assert abs(served[key]["nll_per_token"] - ours["nll_per_token"]) < MEAN_NLL_TOLERANCE


def test_torchrun_two_ranks_agree_with_vllm(vllm_scored: Any, tmp_path: Path) -> None:
    out, _ = vllm_scored
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "inference_hf",
                           f"output_dir={tmp_path / 'ranks'}", *ITEMS],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    ranks = figures(tmp_path / "ranks")
    assert ranks.keys() == figures(out).keys()
    for key, ours in figures(out).items():
        assert abs(ranks[key]["nll_per_token"] - ours["nll_per_token"]) < MEAN_NLL_TOLERANCE
    summary = load(tmp_path / "ranks" / "inference_summary.json")
    assert summary["world_size"] == 2 and [s["shard_index"] for s in summary["shards"]] == [0, 1]


@pytest.mark.parametrize("dataset", ["MovieLens", "LovinkQuestionnaire"])
def test_answer_sets_on_the_embedded_model_predict_an_option_per_item(
        vllm_engine: Any, tmp_path: Path, dataset: str) -> None:
    """Every item whose options are known gets the model's option, and metrics.json the
    accuracy and, for ratings, the MAE."""
    out = run_job(prepare_job(compose(
        f"dataset={dataset}", "prompt=tagged", "dataset.holdout=last", "mode=likelihood",
        f"output_dir={tmp_path / dataset}", "report=false")), lambda job, adapters: vllm_engine)
    with_options = [f for f in figures(out).values() if "options" in f]
    assert with_options and all(f["predicted"] in {o["option"] for o in f["options"]}
                                for f in with_options)
    assert all(0 < f["option_mass"] <= 1 for f in with_options)
    block = load(out / "metrics.json")["likelihood"]
    assert 0 <= block["option_accuracy"]["mean"] <= 1
    if dataset == "MovieLens":
        assert len(with_options) == len(figures(out))  # every rating item
        assert block["option_mae"]["mean"] >= 0
