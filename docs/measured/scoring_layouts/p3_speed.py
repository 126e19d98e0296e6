"""Q5/Q6: speed (and worker peak RSS) of likelihood-scoring layouts, side by side in one engine.

usage: p3_speed.py [max_num_batched_tokens] [phases, comma-separated]
"""
import os
import sys
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TEXT, make_llm  # noqa: E402

N_ITEMS = 16


class PeakRss:
    """Samples the summed RSS of this process's children (engine core + worker)."""

    def __init__(self):
        self.peak, self._stop = 0, False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        me = psutil.Process(os.getpid())
        while not self._stop:
            rss = 0
            for c in me.children(recursive=True):
                try:
                    rss += c.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, rss)
            time.sleep(0.05)

    def stop(self):
        self._stop = True
        self._t.join()
        return self.peak / 2**30


def build_items(tok):
    sents = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    items = []
    for i in range(N_ITEMS):
        body = " ".join(sents[(i + k) % len(sents)] for k in range(5 * len(sents)))
        text = f"Review number {i} of the book about item {i * 7}. {body} How many stars? Rating: "
        ids = tok(text)["input_ids"][-300:]
        items.append(ids)
    return items


def child_cpu():
    """user+sys CPU seconds of the engine processes (robust to other load on the shared box)."""
    total = 0.0
    for c in psutil.Process(os.getpid()).children(recursive=True):
        try:
            t = c.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def timed(label, llm, prompts, sp, results):
    llm.reset_prefix_cache()
    rss = PeakRss()
    c0 = child_cpu()
    t0 = time.perf_counter()
    outs = llm.generate(prompts, sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    cpu = child_cpu() - c0
    peak = rss.stop()
    results[label] = dt
    results["cpu " + label] = cpu
    n_prompt = sum(len(o.prompt_token_ids) for o in outs)
    n_gen = sum(len(c.token_ids) for o in outs for c in o.outputs)
    print(f"[{label}] {len(prompts)} requests, {n_prompt} prompt tok, {n_gen} gen tok: "
          f"wall {dt:.2f}s engine CPU {cpu:.2f}s  peak engine RSS {peak:.2f} GiB", flush=True)
    return outs


def read_last_row(outs):
    return {tuple(o.prompt_token_ids): o.prompt_logprobs[-1][o.prompt_token_ids[-1]].logprob for o in outs}


def main():
    from vllm import SamplingParams

    mnbt = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "-" else None
    phases = sys.argv[2].split(",") if len(sys.argv) > 2 else ["b", "a", "a_read", "c1", "c2", "b2"]
    kw = {"max_num_batched_tokens": mnbt} if mnbt else {}
    if os.environ.get("P3_DTYPE"):
        kw["dtype"] = os.environ["P3_DTYPE"]
    t0 = time.time()
    llm = make_llm(**kw)
    sc = llm.llm_engine.vllm_config.scheduler_config
    print(f"startup {time.time() - t0:.1f}s max_num_batched_tokens={sc.max_num_batched_tokens} "
          f"dtype={llm.llm_engine.vllm_config.model_config.dtype}")
    tok = llm.get_tokenizer()
    items = build_items(tok)
    opt_ids = [tok.convert_tokens_to_ids(str(d)) for d in range(1, 6)]
    print("item lengths", sorted({len(x) for x in items}), "option ids", opt_ids,
          "check 'Rating: 3' ->", tok("Rating: 3", add_special_tokens=False)["input_ids"])
    # warm-up, including the first (torch.compile'd) prompt-logprob rank count
    llm.generate([{"prompt_token_ids": items[0][:20]}], SamplingParams(max_tokens=2, prompt_logprobs=0),
                 use_tqdm=False)

    res = {}
    per_opt = [{"prompt_token_ids": ids + [o]} for ids in items for o in opt_ids]
    sp_b = SamplingParams(max_tokens=1, temperature=0, logprob_token_ids=opt_ids)
    tgt = tok(" I liked the lighthouse keeper and his notebooks a lot; the ending was lovely.",
              add_special_tokens=False)["input_ids"][:20]
    lp = {}
    for ph in phases:
        if ph in ("b", "b2"):
            outs = timed(f"{ph}: per-item max_tokens=1 logprob_token_ids (16 req)", llm,
                         [{"prompt_token_ids": ids} for ids in items], sp_b, res)
            lp[ph] = [o.outputs[0].logprobs[0][t].logprob for o in outs for t in opt_ids]
        elif ph == "a":
            outs = timed("a: per-option prompt_logprobs=0 (80 req)", llm, per_opt,
                         SamplingParams(max_tokens=1, prompt_logprobs=0), res)
            by = read_last_row(outs)
            lp["a"] = [by[tuple(p["prompt_token_ids"])] for p in per_opt]
        elif ph == "acheck":  # value check only: per-option requests for the first 2 items
            outs = llm.generate(per_opt[:10], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
            by = read_last_row(outs)
            lp["acheck"] = [by[tuple(p["prompt_token_ids"])] for p in per_opt[:10]]
        elif ph == "a_read":
            # Cache reads help only once an item's prefix is in the cache: prefill option 1 of every
            # item first, then the other 64 requests read the cached prefix blocks.
            first = [p for k, p in enumerate(per_opt) if k % 5 == 0]
            rest = [p for k, p in enumerate(per_opt) if k % 5 != 0]
            sp = SamplingParams(max_tokens=1, prompt_logprobs=0, skip_reading_prefix_cache=False,
                                detokenize=False)
            llm.reset_prefix_cache()
            c0, t0 = child_cpu(), time.perf_counter()
            o1 = llm.generate(first, sp, use_tqdm=False)
            o2 = llm.generate(rest, sp, use_tqdm=False)
            res["a_read"], res["cpu a_read"] = time.perf_counter() - t0, child_cpu() - c0
            print(f"[a_read: per-option, skip_reading_prefix_cache=False, 16 then 64 req] wall "
                  f"{res['a_read']:.2f}s engine CPU {res['cpu a_read']:.2f}s; cached tokens per req "
                  f"(2nd wave) {sorted({o.num_cached_tokens for o in o2})}", flush=True)
            by = read_last_row(o1 + o2)
            lp["a_read"] = [by[tuple(p["prompt_token_ids"])] for p in per_opt]
        elif ph == "c1":
            timed(f"c1: score a {len(tgt)}-token target, prompt_logprobs=0 (16 req)", llm,
                  [{"prompt_token_ids": ids + tgt} for ids in items],
                  SamplingParams(max_tokens=1, prompt_logprobs=0), res)
        elif ph == "c2":
            timed("c2: generate n=5 x 32 tokens (16 req)", llm,
                  [{"prompt_token_ids": ids} for ids in items],
                  SamplingParams(n=5, max_tokens=32, temperature=1.0, top_p=0.9, seed=3,
                                 ignore_eos=True), res)
    for k in lp:
        if k != "b" and "b" in lp:
            print(f"max |{k} - b| over 80 option log-probs =",
                  max(abs(x - y) for x, y in zip(lp[k], lp["b"])))
    if "b" in lp:
        print("item 0 options b:", [round(x, 4) for x in lp["b"][:5]])
    print("RESULTS", {k: round(v, 2) for k, v in res.items()})

    def get(prefix, cpu=False):
        return next((v for k, v in res.items() if k.startswith(("cpu " if cpu else "") + prefix)), None)

    for num, den in (("a:", "b:"), ("a_read", "b:"), ("c2", "c1")):
        if get(num) and get(den):
            print(f"ratio {num.rstrip(':')}/{den.rstrip(':')}: wall {get(num) / get(den):.2f}  "
                  f"engine CPU {get(num, True) / get(den, True):.2f}")


if __name__ == "__main__":
    main()
