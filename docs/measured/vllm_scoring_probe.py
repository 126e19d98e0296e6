"""The probe behind docs/benchmarks.md's "Likelihood" breakdown: where vLLM's scoring time goes.

Run from the repository root: `.venv/bin/python docs/measured/vllm_scoring_probe.py` (the CPU
build; it prints four timings of 8 random-token prompts of ~520-540 tokens).
"""
import os
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main() -> None:
    from omegaconf import OmegaConf
    from vllm import SamplingParams

    from inference_core.engine import ScoringRequest
    from inference_vllm.engine import VLLMEngine

    cfg = OmegaConf.to_container(OmegaConf.load("conf/engine/vllm.yaml"))
    cfg.update(max_model_len=2048, scores=True, generates=True)
    engine = VLLMEngine(".cache/models/SmolLM2-135M-Instruct", cfg, seed=42)
    one_token = SamplingParams(max_tokens=1, temperature=0)
    list(engine.loglikelihood([ScoringRequest("warm", list(range(1000, 1064)), 32)]))

    def timed(label: str, action) -> None:
        start = time.time()
        action()
        print(f"{label}: {time.time() - start:.2f} s")

    prompts = [{"prompt_token_ids": list(range(1000 + 7 * i, 1520 + 7 * i))} for i in range(8)]
    timed("plain prefill 8x520", lambda: engine.llm.generate(prompts, one_token, use_tqdm=False))
    timed("the same from the cache", lambda: engine.llm.generate(prompts, one_token,
                                                                 use_tqdm=False))
    scored = [ScoringRequest(str(i), list(range(3000 + 7 * i, 3540 + 7 * i)), 520)
              for i in range(8)]
    timed("loglikelihood 8x540 (warm-up, then the target rows)",
          lambda: list(engine.loglikelihood(scored)))
    plain = [{"prompt_token_ids": list(range(5000 + 7 * i, 5540 + 7 * i))} for i in range(8)]
    every_row = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, detokenize=False)
    timed("plain prompt_logprobs 8x540 (every row)",
          lambda: engine.llm.generate(plain, every_row, use_tqdm=False))
    engine.close()


if __name__ == "__main__":
    main()
