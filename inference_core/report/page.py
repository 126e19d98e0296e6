"""A run's report.html: summary, a chart, and one card per item (samples beside the reference).

Usage: python -m inference_core.report RUN_DIR [RUN_DIR...] [--prompt-budget-mb N] [--no-prompts]

One self-contained file (inline CSS, JS, data and SVG chart; nothing is fetched). The cards are
rendered by the page's script from the embedded JSON, one page of cards at a time, so a run of
50,000 items opens as fast as one of fifty.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from inference_core.command import CommandParser, skipped_code
from inference_core.evaluation.scoring import METRICS_FILE, iter_user_docs
from inference_core.report.html import esc, page_parts
from inference_core.report.data import Payload, load_extras
from inference_core.report.prompt_texts import PAGE_PROMPT_CHARS, PromptTexts
from inference_core.rundir.layout import UserFile
from inference_core.rundir.writers import REPORT_FILE, SUMMARY_FILE, for_each_run_dir, read_json, write_bytes_atomic

log = logging.getLogger(__name__)

DEFAULT_PROMPT_BUDGET_MB = PAGE_PROMPT_CHARS / 1e6  # prompt text in one page; beyond it prompts are left out
MAX_LISTED_SKIPS = 200
_REASON_COLOURS = {"stop": "#3b6fb6", "length": "#e07b39"}
_OTHER_COLOUR = "#999999"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def summary_facts(summary: dict[str, Any], metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the top of the page."""
    device = summary.get("device") or {}
    gpus = device.get("gpus") or []
    facts = [
        ("dataset", _fmt(summary.get("dataset"))), ("model", _fmt(summary.get("model_name"))),
        ("ablation", _fmt(summary.get("ablation_config"))),
        ("engine", _fmt(summary.get("engine"))), ("checkpoint", _fmt(summary.get("checkpoint"))),
        *([("LoRA adapter", _fmt(summary["adapter"]))] if summary.get("adapter") else []),
        ("users", _fmt(summary.get("num_users"))), ("items", _fmt(summary.get("num_data_items"))),
        ("samples", _fmt(summary.get("total_samples"))),
        ("samples/s", _fmt(summary.get("throughput_samples_per_sec"))),
        ("output tokens/s", _fmt(summary.get("output_tokens_per_sec"))),
        ("prompt / generated tokens", f"{_fmt(summary.get('prompt_tokens'))} / "
                                      f"{_fmt(summary.get('generated_tokens'))}"),
        ("truncated prompts", _fmt(summary.get("truncated_prompts"))),
        ("skipped items", _fmt(len(summary.get("skipped_items") or []))),
        ("resumed users", _fmt(summary.get("resumed_users"))),
        ("inference / load s", f"{_fmt(summary.get('inference_time_seconds'))} / "
                               f"{_fmt(summary.get('model_load_seconds'))}"),
        ("device", f"{device.get('cpu', '?')}, {device.get('cpu_count', '?')} cores, "
                   f"GPUs: {', '.join(map(str, gpus)) or 'none'}" if device else "–"),
        ("finished", _fmt(summary.get("timestamp"))),
    ]
    for key, label in (("chrf_mean_of_n", "chrF mean / best of n"),
                       ("bleu_mean_of_n", "BLEU mean / best of n"),
                       ("rouge_l_mean_of_n", "ROUGE-L mean / best of n")):
        if metrics.get(key) is not None:
            best = metrics.get(key.replace("mean", "best"))
            facts.append((label, f"{_fmt(metrics[key])} / {_fmt(best)}"))
    if metrics.get("distinct_2") is not None:
        facts.append(("distinct-1 / -2", f"{_fmt(metrics.get('distinct_1'), 3)} / "
                                         f"{_fmt(metrics['distinct_2'], 3)}"))
    return facts + likelihood_facts(summary, metrics.get("likelihood") or {})


# metrics.json's likelihood means shown at the top of the page, with their labels.
LIKELIHOOD_FACTS = (("loss", "loss (NLL per target token)"),
                    ("body_nll_per_token", "answer NLL per token"),
                    ("body_bits_per_byte", "answer bits per byte"),
                    ("body_greedy_match", "answer greedy match"),
                    ("option_accuracy", "option accuracy"), ("option_mae", "option MAE"),
                    ("option_expected_mae", "expected-value MAE"),
                    ("option_mass", "mass on the options"))


def likelihood_facts(summary: dict[str, Any], figures: dict[str, Any]
                     ) -> list[tuple[str, str]]:
    """The mode, and for a run that scores likelihoods its counts and means [interval]."""
    if (summary.get("mode") or "generate") == "generate":
        return []
    facts = [("mode", str(summary["mode"])),
             ("scored / unscored items", f"{_fmt(figures.get('scored_items'))} / "
                                         f"{_fmt(figures.get('unscored_items'))}"),
             ("merged boundaries", _fmt(figures.get("merged_boundary_items")))]
    for key, label in LIKELIHOOD_FACTS:
        value = figures.get(key)
        if isinstance(value, dict):
            facts.append((label, f"{_fmt(value['mean'], 3)} [{_fmt(value['ci_low'], 3)}, "
                                 f"{_fmt(value['ci_high'], 3)}]"))
    return facts


def token_histogram_svg(docs: Sequence[UserFile]) -> str:
    """Inline SVG: output tokens per sample, stacked by finish reason."""
    def samples() -> Iterator[tuple[int, str]]:  # read twice: no list of every sample
        return ((tokens, reason) for doc in docs for it in doc.items
                for tokens, reason in zip(it.output_tokens, it.finish_reasons))

    top = max((tokens for tokens, _ in samples()), default=None)
    if top is None:
        return '<p class="muted">no samples to chart</p>'
    width = max(1, math.ceil((top + 1) / 24))
    bins: list[Counter[str]] = [Counter() for _ in range(top // width + 1)]
    for tokens, reason in samples():
        bins[tokens // width][reason if reason in _REASON_COLOURS else "other"] += 1
    tallest = max(sum(b.values()) for b in bins)
    w, h, left, bottom = 640, 190, 44, 30
    bar = (w - left - 10) / len(bins)
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h + 24}" width="{w}" height="{h + 24}" '
             'role="img" aria-label="histogram of output tokens per sample">']
    for i, counts in enumerate(bins):
        y = h - bottom
        for reason in ("stop", "length", "other"):
            height = (h - bottom - 22) * counts[reason] / tallest
            if height:
                y -= height
                colour = _REASON_COLOURS.get(reason, _OTHER_COLOUR)
                parts.append(f'<rect x="{left + i * bar + 1:.1f}" y="{y:.1f}" width="'
                             f'{max(bar - 2, 1):.1f}" height="{height:.1f}" fill="{colour}">'
                             f"<title>{i * width}–{(i + 1) * width - 1} tokens, {esc(reason)}: "
                             f"{counts[reason]}</title></rect>")
    axis_y = h - bottom
    parts += [
        f'<line x1="{left}" y1="{axis_y}" x2="{w - 10}" y2="{axis_y}" stroke="#444"/>',
        f'<text x="{left}" y="{axis_y + 16}" class="tick">0</text>',
        f'<text x="{w - 10}" y="{axis_y + 16}" class="tick" text-anchor="end">{top} tokens</text>',
        f'<text x="{left}" y="12" class="tick">tallest bar: {tallest:,} samples</text>',
        f'<text x="{(w + left) / 2:.0f}" y="{h + 4}" class="tick" text-anchor="middle">'
        "output tokens per sample</text>",
    ]
    for j, (reason, colour) in enumerate([*_REASON_COLOURS.items(), ("other", _OTHER_COLOUR)]):
        x = left + 10 + j * 90
        parts.append(f'<rect x="{x}" y="{h + 10}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{h + 19}" class="tick">{reason}</text>')
    return "".join(parts) + "</svg>"


def _skips_html(skipped: Sequence[dict[str, Any]], what: str = "skipped",
                reason: str = "reason") -> str:
    """The items the summary names (skipped, or unscored) with why, the first few hundred."""
    if not skipped:
        return ""
    rows = "".join(
        f"<li><code>{esc(s.get('user_hash'))}</code> {esc(orjson.dumps(s.get('location')).decode())}"
        f": {esc(s.get(reason))}</li>" for s in skipped[:MAX_LISTED_SKIPS])
    more = (f"<li>… and {len(skipped) - MAX_LISTED_SKIPS} more (inference_summary.json)</li>"
            if len(skipped) > MAX_LISTED_SKIPS else "")
    return (f'<details class="skips"><summary>{len(skipped)} {what} items and why</summary>'
            f"<ul>{rows}{more}</ul></details>")


def _order_html(ranked: bool) -> str:
    """A run that scored likelihoods lists its worst predicted items first; the select turns
    back to test-file order."""
    if not ranked:
        return ""
    return ('<label title="wrong answer-set predictions first, then the highest answer NLL per '
            'token">order <select id="order"><option value="worst">worst predicted first'
            '</option><option value="file">test-file order</option></select></label>')


def _controls_html(ranked: bool = False) -> str:
    pager = ('<div class="pager"><button type="button" class="prev">‹ previous</button>'
             '<span class="page-info"></span><button type="button" class="next">next ›</button></div>')
    return (
        '<nav class="controls" aria-label="filters">'
        '<label>user <select id="user-filter"><option value="">all users</option></select></label>'
        '<label>search <input id="search" type="search" placeholder="cue, context, reference, '
        'samples, id…"></label>'
        '<label><input id="only-truncated" type="checkbox"> truncated prompts</label>'
        '<label><input id="only-length" type="checkbox"> a sample hit max_tokens</label>'
        f"{_order_html(ranked)}</nav>{pager}"
        '<main id="cards"><noscript>The cards need JavaScript; the summary above does not.'
        f"</noscript></main>{pager}"
    )


def render_report(run_dir: Path, prompt_budget_mb: float = DEFAULT_PROMPT_BUDGET_MB,
                  with_prompts: bool = True, prompts: PromptTexts | None = None,
                  dataset: Any = None, users: Sequence[UserFile] | None = None,
                  ) -> Iterator[bytes]:
    """The whole page for one run folder, as UTF-8 pieces made as they are written; `prompts`:
    the run's own, decoded as its users finished, if it has them; `users`: its user files, if
    the caller has read them."""
    summary = read_json(run_dir / SUMMARY_FILE)
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.is_file() else {}
    docs = list(iter_user_docs(run_dir)) if users is None else list(users)
    extras = load_extras(run_dir, {d.key for d in docs}, with_prompts, prompts, dataset)
    payload = Payload(docs, extras, int(prompt_budget_mb * 1e6))
    notes = list(extras.notes)
    if not with_prompts:
        notes.append("full prompts were left out (--no-prompts)")
    if payload.prompts_omitted:
        notes.append(f"{payload.prompts_omitted} prompts were left out to keep the page under "
                     f"{prompt_budget_mb:g} MB of prompt text (--prompt-budget-mb)")
    title = " · ".join(str(summary.get(k) or "?")
                       for k in ("dataset", "model_name", "ablation_config"))
    facts = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>"
                    for k, v in summary_facts(summary, metrics))
    note_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    settings = orjson.dumps(summary.get("sampling_params"), option=orjson.OPT_INDENT_2).decode()
    body = (
        f'<header class="top"><h1>{esc(title)}</h1><p class="muted">{esc(run_dir)}</p></header>'
        f'<section class="summary"><dl class="facts">{facts}</dl>'
        f'<figure>{token_histogram_svg(docs)}</figure></section>{note_html}'
        f'{_skips_html(summary.get("skipped_items") or [])}'
        f'{_skips_html((summary.get("likelihood") or {}).get("unscored") or [], "unscored", "why")}'
        f'<details class="settings"><summary>sampling settings</summary><pre>{esc(settings)}</pre>'
        f"</details>{_controls_html(payload.order is not None)}"
    )
    return page_parts(f"report: {title}", body, scripts=("report.js",), data_id="report-data",
                      data_parts=payload.json_parts("; ".join(notes) or None))


def write_report(run_dir: Path, prompt_budget_mb: float = DEFAULT_PROMPT_BUDGET_MB,
                 with_prompts: bool = True, prompts: PromptTexts | None = None,
                 dataset: Any = None, users: Sequence[UserFile] | None = None) -> Path:
    """Write RUN_DIR/report.html (atomically); return its path."""
    run_dir = Path(run_dir)
    path = run_dir / REPORT_FILE
    write_bytes_atomic(path, render_report(run_dir, prompt_budget_mb, with_prompts, prompts,
                                           dataset, users))
    log.info("wrote %s", path)
    return path


def write_report_safely(run_dir: Path, prompts: PromptTexts | None = None,
                        dataset: Any = None, users: Sequence[UserFile] | None = None,
                        ) -> Path | None:
    """For a finished run: a report that cannot be made is logged, never fails the run.

    `prompts`, `dataset` and `users`: what the run has in memory or has read, so the page
    needs no second build, load or read.
    """
    try:
        return write_report(run_dir, prompts=prompts, dataset=dataset, users=users)
    except Exception:  # noqa: BLE001 - the run's results are on disk whatever happens here
        log.exception("could not write %s; make it later with python -m inference_core.report %s",
                      Path(run_dir) / REPORT_FILE, run_dir)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = CommandParser("python -m inference_core.report",
                           "(re)write report.html of run folders: summary, chart, every item's "
                           "samples beside its reference")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--prompt-budget-mb", type=float, default=DEFAULT_PROMPT_BUDGET_MB,
                        help="most prompt text (MB) embedded in one page; the rest is left out")
    parser.add_argument("--no-prompts", action="store_true",
                        help="do not rebuild the full prompts (no tokenizer needed)")
    args = parser.parse_args(argv)
    parser.require_folders(args.run_dirs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return skipped_code(for_each_run_dir(args.run_dirs, lambda run_dir: write_report(
        run_dir, args.prompt_budget_mb, not args.no_prompts)), args.run_dirs)


if __name__ == "__main__":
    raise SystemExit(main())
