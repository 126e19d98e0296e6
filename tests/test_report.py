"""report.html and leaderboard.html on tiny run folders written here (no engine), hostile text
included; the pages are opened in headless Chromium where one is installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from conftest import dialogue_item, user_record, write_dataset
from inference_core.evaluation import leaderboard
from inference_core.report import page as report
from inference_core.data.loader import load_dataset
from inference_core.run.job import file_digest
from inference_core.prompts.builder import Ablation, PromptBuilder, PromptStyle, build_prompts
from inference_core.rundir.writers import REPORT_FILE, safe_user_filename

EVIL_ID = "<script>alert(1)</script>\"&'id"
EVIL_NAME = "<script>alert(\"name\")</script> & 'Bob'"
EVIL_TEXT = "<script>alert(1)</script> \"quoted\" & <b>bold</b>"
STYLE = PromptStyle("Reply in character.", "Earlier lines", 1)
ABLATION = Ablation("profile_and_history_and_context", True, True, True)
MAX_MODEL_LEN, MAX_TOKENS = 2048, 32


def tiny_dataset(folder: Path) -> Path:
    test = [
        user_record(EVIL_ID, EVIL_NAME, [
            dialogue_item(EVIL_TEXT, ("ALICE", f"Say it: {EVIL_TEXT}"), ("BOB", "Fine."),
                          name="BOB")]),
        user_record("u2", "ALICE", [
            dialogue_item(None, *[("BOB", f"turn {k} zebra") for k in range(6)], name="ALICE"),
            dialogue_item("a plain reference", ("BOB", "Hello?"), name="ALICE")]),
    ]
    train = [user_record("u2", "ALICE", [dialogue_item("an old line", ("BOB", "Hi"),
                                                       name="ALICE", timestamp="2001")])]
    return write_dataset(folder, train, test)


def identity(data: Path, checkpoint: Path) -> dict[str, Any]:
    return {
        "checkpoint": str(checkpoint), "model_name": "tiny-model", "dataset": "Chameleons",
        "dataset_path": str(data), "test_file": str(data / "test_leaderboard.json"),
        "test_file_sha256": file_digest(data / "test_leaderboard.json"), "holdout": None,
        "ablation_config": ABLATION.name,
        "ablation_parts": {"profile": True, "history": True, "context": True},
        "prompt_style": STYLE.__dict__, "chat_template_kwargs": {},
        "max_model_len": MAX_MODEL_LEN, "max_users": None,
        "sampling_params": {"num_samples": 2, "max_tokens": MAX_TOKENS, "temperature": 1.0},
    }


def make_run(run_dir: Path, data: Path, checkpoint: Path, tokenizer: Any,
             model_name: str = "tiny-model", samples_per_s: float = 2.0) -> Path:
    """A run folder as the pipeline leaves it: run.json, summary, users/*.json."""
    dataset = load_dataset("Chameleons", data)
    builder = PromptBuilder(tokenizer, STYLE, ABLATION, MAX_MODEL_LEN - MAX_TOKENS)
    tokens = {(p.user_hash, p.location): p.num_tokens for p in build_prompts(builder, dataset.users)[0]}
    (run_dir / "users").mkdir(parents=True)
    (run_dir / "run.json").write_bytes(orjson.dumps(identity(data, checkpoint)))
    for user in dataset.users:
        items = [{"location": it.location.as_dict(),
                  "prompt_tokens": tokens[(user.user_hash, it.location)], "truncated": False,
                  "generated_samples": [f"{EVIL_TEXT} sample one of {user.name}", "second sample"],
                  "finish_reasons": ["stop", "length"], "output_tokens": [9, MAX_TOKENS],
                  **({"reference": it.reference} if it.reference else {})} for it in user.items]
        doc = {"user_hash": user.user_hash, "file": safe_user_filename(user.user_hash),
               "profile_name": user.name, "dataset": "Chameleons", "ablation": ABLATION.name,
               "model": model_name, "items": items}
        (run_dir / "users" / doc["file"]).write_bytes(orjson.dumps(doc))
    summary = {"checkpoint": str(checkpoint), "model_name": model_name, "dataset": "Chameleons",
               "ablation_config": ABLATION.name, "engine": "vllm", "num_users": 2,
               "num_data_items": 3, "total_samples": 6, "truncated_prompts": 0,
               "skipped_items": [{"location": None, "user_hash": EVIL_ID, "reason": EVIL_TEXT}],
               "throughput_samples_per_sec": samples_per_s, "output_tokens_per_sec": 20.0,
               "sampling_params": {"num_samples": 2, "max_tokens": MAX_TOKENS}}
    (run_dir / "inference_summary.json").write_bytes(orjson.dumps(summary))
    return run_dir


@pytest.fixture
def run_dir(tmp_path: Path, model_path: Path, tokenizer: Any) -> Path:
    return make_run(tmp_path / "runs" / "tiny", tiny_dataset(tmp_path / "data"), model_path,
                    tokenizer)


def page_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                      re.S)
    assert match, "no data element"
    return json.loads(match.group(1))


class TagCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = TagCounter()
    parser.feed(html)
    return parser.tags


def test_report_structure_and_escaping(run_dir: Path) -> None:
    html = report.write_report(run_dir).read_text()
    assert "<script>alert" not in html.lower() and "<b>bold" not in html
    scripts = [a for t, a in tags_of(html) if t == "script"]
    assert [a.get("type") for a in scripts] == ["application/json", None]  # data, then our code
    assert "Content-Security-Policy" in html and "default-src 'none'" in html.replace("&#x27;", "'")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # skipped-item reason, as text
    data = page_data(html)
    assert [u["id"] for u in data["users"]] == [EVIL_ID, "u2"]
    assert data["users"][0]["name"] == EVIL_NAME
    first, no_ref, with_ref = data["items"]
    assert first["ref"] == EVIL_TEXT and first["s"][0].startswith(EVIL_TEXT)
    assert first["cue"] == "BOB:" and first["ctx"][0] == ["ALICE", f"Say it: {EVIL_TEXT}"]
    assert no_ref["ref"] is None and no_ref["nctx"] == 6 and len(no_ref["ctx"]) == 4
    assert no_ref["ctx"][-1] == ["BOB", "turn 5 zebra"] and with_ref["ref"] == "a plain reference"
    assert first["fr"] == ["stop", "length"] and first["ot"] == [9, MAX_TOKENS]
    # The rebuilt prompts are the ones the pipeline builds (same token counts, no mismatch).
    assert not any("pm" in it for it in data["items"]) and data["promptNote"] is None
    prompt = data["prefixes"][first["pp"]] + first["ps"]
    assert "<|im_start|>system" in prompt and EVIL_TEXT in prompt
    assert no_ref["pp"] == with_ref["pp"] and len(no_ref["ps"]) < len(prompt)  # shared prefix once
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_report_without_dataset_or_checkpoint(run_dir: Path, caplog: pytest.LogCaptureFixture,
                                              ) -> None:
    ident = orjson.loads((run_dir / "run.json").read_bytes())
    (run_dir / "run.json").write_bytes(orjson.dumps({**ident, "checkpoint": "/nowhere/model"}))
    data = page_data(report.write_report(run_dir).read_text())
    assert data["items"][0]["cue"] == "BOB:" and data["items"][0]["pp"] is None
    assert "/nowhere/model" in data["promptNote"] and "could not rebuild" in caplog.text
    shutil.rmtree(ident["dataset_path"])
    data = page_data(report.write_report(run_dir).read_text())
    assert "cue" not in data["items"][0] and data["items"][0]["s"][1] == "second sample"
    assert "not reachable" in data["promptNote"] and "not reachable" in caplog.text


def test_report_cli(run_dir: Path, tmp_path: Path) -> None:
    assert report.main([str(run_dir), "--no-prompts"]) == 0
    data = page_data((run_dir / REPORT_FILE).read_text())
    assert data["prefixes"] == [] and "--no-prompts" in data["promptNote"]
    assert report.main([str(run_dir), "--prompt-budget-mb", "0.0001"]) == 0  # 100 characters
    data = page_data((run_dir / REPORT_FILE).read_text())
    assert data["promptsOmitted"] == 3 and "--prompt-budget-mb" in data["promptNote"]
    (tmp_path / "not-a-run").mkdir()
    assert report.main([str(run_dir), str(tmp_path / "not-a-run")]) == 3  # one folder skipped
    assert report.main([str(tmp_path / "not-a-run")]) == 2  # no run folder at all: bad input


def test_finish_writes_the_report_unless_turned_off(tmp_path: Path, model_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from conftest import compose
    from inference_core.run import finish as run_finish
    from inference_core.run.job import prepare_job

    written: list[Path] = []
    monkeypatch.setattr(run_finish, "merge_run", lambda out, count, found: {"skipped_items": []})
    monkeypatch.setattr(report, "write_report", lambda out, **given: written.append(out))
    job = replace(prepare_job(compose(f"output_dir={tmp_path}")), evaluate=False)
    assert job.report is True
    run_finish.finish(job)
    assert written == [tmp_path]
    job = prepare_job(compose(f"output_dir={tmp_path}", "report=false"))
    assert job.report is False
    run_finish.finish(replace(job, evaluate=False))
    assert written == [tmp_path]


@pytest.fixture
def board(tmp_path: Path, model_path: Path, tokenizer: Any) -> Path:
    """Two runs under outputs/, and the leaderboard built by its CLI (which writes the reports)."""
    data = tiny_dataset(tmp_path / "data")
    root = tmp_path / "outputs"
    make_run(root / "a", data, model_path, tokenizer, "<script>alert(2)</script>", 1.5)
    make_run(root / "b b", data, model_path, tokenizer, "model-b", 3.5)
    assert leaderboard.main([str(root), "--out", str(root / "leaderboard")]) == 0
    return root / "leaderboard" / "leaderboard.html"


def test_leaderboard_html_table_links_and_escaping(board: Path) -> None:
    html = board.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    tags = tags_of(html)
    sortable = [a["data-col"] for t, a in tags if t == "th" and a.get("data-col")]
    assert sortable[:4] == ["dataset", "model", "ablation", "engine"] and "run_dir" not in sortable
    links = [a["href"] for t, a in tags if t == "a" and a.get("class") == "report-link"]
    assert sorted(links) == ["../a/report.html", "../b%20b/report.html"]
    assert all((board.parent / Path(href.replace("%20", " "))).is_file() for href in links)
    assert any(t == "img" and (a.get("src") or "").startswith("data:image/png;base64,")
               for t, a in tags)


# --- headless Chromium -------------------------------------------------------------------------

def chromium() -> str:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return str(shutil.which(name))
    pytest.skip("no chromium binary on PATH (make test installs Debian's chromium via apt-get "
                "when run as root; or set CHROMIUM=/path/to/chrome)")


def browse(page: Path, *args: str, fragment: str = "") -> str:
    """Run headless Chromium on a file; returns its stdout (the DOM for --dump-dom)."""
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
             *args, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cards(dom: str) -> int:
    return dom.count('<article class="card">')


@pytest.mark.slow
def test_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    page = report.write_report(run_dir)
    dom = browse(page, "--dump-dom")
    assert cards(dom) == 3 and "items 1–3 of 3 shown" in dom
    assert dom.count("<script") == 2  # the data and the page's code: nothing else became markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \"quoted\" &amp; &lt;b&gt;bold&lt;/b&gt;" in dom
    assert "&lt;script&gt;alert(\"name\")&lt;/script&gt; &amp; 'Bob'" in dom
    assert "full prompt (" in dom and "turn 5 zebra" in dom and "… 2 earlier turns" in dom
    assert cards(browse(page, "--dump-dom", fragment="q=zebra")) == 1
    assert cards(browse(page, "--dump-dom", fragment="user=u2")) == 2
    assert cards(browse(page, "--dump-dom", fragment="user=" + quote(EVIL_ID))) == 1
    assert "0 of 3 items match" in browse(page, "--dump-dom", fragment="q=no-such-text")
    shot = tmp_path / "report.png"
    browse(page, f"--screenshot={shot}", "--window-size=1200,900")
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 900) and len(img.convert("RGB").getcolors(1 << 20) or []) > 20


@pytest.mark.slow
def test_report_pages_through_many_items(tmp_path: Path) -> None:
    """No run.json, no dataset: 120 items, 50 cards a page, the page number from the address."""
    run_dir = tmp_path / "big"
    (run_dir / "users").mkdir(parents=True)
    items = [{"location": {"record": k, "collection": 0, "item": 0}, "prompt_tokens": 5,
              "truncated": k % 2 == 0, "generated_samples": [f"text {k}"],
              "finish_reasons": ["stop"], "output_tokens": [2]} for k in range(120)]
    (run_dir / "users" / "u.json").write_bytes(orjson.dumps(
        {"user_hash": "u", "profile_name": None, "items": items}))
    (run_dir / "inference_summary.json").write_bytes(orjson.dumps({"dataset": "X"}))
    page = report.write_report(run_dir)
    assert cards(browse(page, "--dump-dom")) == 50
    last = browse(page, "--dump-dom", fragment="page=3")
    assert cards(last) == 20 and "items 101–120 of 120 shown" in last
    assert cards(browse(page, "--dump-dom", fragment="truncated=1&page=2")) == 10


@pytest.mark.slow
def test_leaderboard_renders_and_sorts_in_chromium(board: Path) -> None:
    dom = browse(board, "--dump-dom", fragment="sort=samples_per_s:asc")
    rows = re.findall(r"<tr>(.*?)</tr>", dom.split("<tbody>")[1], re.S)
    assert len(rows) == 2 and 'aria-sort="ascending"' in dom
    assert "&lt;script&gt;alert(2)" in rows[0] and "model-b" in rows[1]  # 1.5 before 3.5
    dom = browse(board, "--dump-dom", fragment="sort=samples_per_s:desc")
    assert "model-b" in re.findall(r"<tr>(.*?)</tr>", dom.split("<tbody>")[1], re.S)[0]


def test_shared_prefix_is_the_common_prefix() -> None:
    import os
    import random

    from inference_core.report.prompt_texts import shared_prefix

    rng = random.Random(3)
    for _ in range(500):
        base = "".join(rng.choice("ab") for _ in range(rng.randint(0, 30)))
        texts = [base + "".join(rng.choice("abc") for _ in range(rng.randint(0, 5)))
                 for _ in range(rng.randint(1, 4))]
        assert shared_prefix(texts) == os.path.commonprefix(texts)
    assert shared_prefix([]) == ""


def test_the_page_indexes_the_stored_prompts_and_shares_what_its_items_share() -> None:
    from inference_core.data.records import Location
    from inference_core.report.data import Extras, Payload
    from inference_core.report.prompt_texts import PromptStore
    from inference_core.rundir.layout import UserFile, UserItem

    store = PromptStore()
    store.add_user("u", [("0/0/0", "history. cue one", 4)])
    store.add_user("u", [("0/0/1", "history. cue two", 4), ("0/0/2", "other", 2)])  # handed over again
    assert store.users["u"].prefix == "" and store.get(("u", "0/0/1")).text == "history. cue two"

    def item(n: int, tokens: int) -> UserItem:
        return UserItem(Location(0, 0, n), tokens, False, ("s",), ("stop",), (1,))

    # The file lacks item 2: the page's prefix is what items 0 and 1 share, each text whole.
    doc = UserFile("u", "u.json", None, None, None, None, (item(1, 5), item(0, 4)))
    payload = Payload([doc], Extras({}, store, ()), 10_000)
    data = orjson.loads(b"".join(payload.json_parts(None)))
    assert data["prefixes"] == ["history. cue "]
    assert [(c["loc"], c["pp"], c["ps"], c.get("pm")) for c in data["items"]] == [
        ("0/0/0", 0, "one", None), ("0/0/1", 0, "two", 4)]  # item 1 recorded 5 tokens, rebuilt 4
    tight = Payload([doc], Extras({}, store, ()), len("history. cue onetwo") - 1)
    assert tight.prompts_omitted == 2 and tight.prefixes == []


def test_prompts_are_decoded_only_as_far_as_the_page_budget(tokenizer: Any) -> None:
    from inference_core.report.prompt_texts import PromptTexts

    ids = tokenizer("a fairly long prompt that repeats " * 20)["input_ids"]
    users = [[((f"u{u}", f"{u}/0/{i}"), ids) for i in range(2)] for u in range(10)]
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    # A user's two identical prompts cost one text (the page stores a shared prefix once).
    for own_copy in (False, True):  # the writer thread decodes with its own copy: same texts
        prompts = PromptTexts(tokenizer, 3 * len(text) + 10, own_copy)
        prompts.add_users(users[:2])
        for user in users[2:]:  # as users finish, one at a time
            prompts.add_users([user])
        store = prompts.store
        assert len(store) == 6 and all(store.get(key).text == text for key in store.keys())
        assert prompts.notes == ["14 prompts were not decoded: the page's prompt budget is spent"]