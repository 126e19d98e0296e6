"""What a run's report page shows, as plain data for the page's JSON.

The user files hold samples, token counts and references, but not the item's cue and context
nor the prompt: those come from the dataset (load_dataset, checked against the digest in run.json)
and from rebuilding the prompts with the run's recorded settings and the checkpoint's tokenizer.
Storing prompts in the user files would grow them by the whole history for every item. When the
dataset or the checkpoint cannot be reached, the page is still made, without those parts, and a
note says why.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_core.data.loader import TEST_FILE, TRAIN_FILE, load_dataset
from inference_core.prompts.builder import build_prompts, render_cue
from inference_core.data.records import Dataset, TestItem, UserRecord
from inference_core.rundir.layout import IDENTITY_FILE, PROMPTS_FILE, UserFile, UserItem
from inference_core.report.html import json_for_script
from inference_core.report.prompt_texts import Key, PromptTexts, RebuiltPrompt, shared_prefix
from inference_core.rundir.writers import read_json

log = logging.getLogger(__name__)

CONTEXT_TURNS = 4  # the last turns before the cue shown on a card


@dataclass(frozen=True)
class ItemContext:
    """An item's cue and its last context turns, from the dataset."""

    cue: str
    turns: tuple[tuple[str, str], ...]
    total_turns: int


@dataclass(frozen=True)
class Extras:
    """The parts that need the dataset and the checkpoint; empty where they were unreachable."""

    contexts: Mapping[Key, ItemContext]
    prompts: Mapping[Key, RebuiltPrompt]
    notes: tuple[str, ...]


def _note(notes: list[str], message: str) -> None:
    log.warning("report: %s", message)
    notes.append(message)


def read_identity(run_dir: Path, notes: list[str]) -> dict[str, Any] | None:
    path = run_dir / IDENTITY_FILE
    if not path.is_file():
        _note(notes, f"no {IDENTITY_FILE} in the run folder: cues, context and prompts are not shown")
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        _note(notes, f"{IDENTITY_FILE} unreadable ({exc}): cues, context and prompts are not shown")
        return None


def _load_run_dataset(identity: dict[str, Any], notes: list[str]) -> Dataset | None:
    """The run's dataset as the run saw it, or None (with a note) when it is gone or changed."""
    from inference_core.run.job import file_digest

    folder = Path(str(identity.get("dataset_path") or ""))
    holdout = identity.get("holdout")
    source = folder / (TRAIN_FILE if holdout else TEST_FILE)
    try:
        if not source.is_file():
            _note(notes, f"dataset file {source} is not reachable: cues, context and prompts "
                         "are not shown")
            return None
        expected = identity.get("test_file_sha256")
        if expected and file_digest(source) != expected:
            _note(notes, f"{source} changed since the run: cues, context and prompts are not shown")
            return None
        return load_dataset(str(identity.get("dataset") or ""), folder, None,
                            identity.get("max_users"), holdout)
    except (OSError, ValueError) as exc:
        _note(notes, f"dataset {folder} could not be read ({exc}): cues, context and prompts "
                     "are not shown")
        return None


def item_context(user: UserRecord, item: TestItem) -> ItemContext:
    turns = tuple((t.source, t.content) for t in item.context[-CONTEXT_TURNS:])
    return ItemContext(render_cue(user, item), turns, len(item.context))


def rebuild_prompts(identity: dict[str, Any], users: Sequence[UserRecord], notes: list[str],
                    ) -> dict[Key, RebuiltPrompt]:
    """Every item's prompt as the engine got it: same builder, same settings, decoded ids."""
    from inference_core.run.job import Job
    from inference_core.run.prompting import load_tokenizer, prompt_builder

    checkpoint = str(identity.get("checkpoint") or "")
    try:
        tokenizer = load_tokenizer(Path(checkpoint))
        job = Job.from_identity(identity, Path(str(identity.get("test_file", "."))).parent)
        prompts, _ = build_prompts(prompt_builder(job, tokenizer), users)
        return {(p.user_hash, p.location.key()): RebuiltPrompt(
            tokenizer.decode(list(p.token_ids), skip_special_tokens=False,
                             clean_up_tokenization_spaces=False), p.num_tokens)
            for p in prompts}
    except Exception as exc:  # noqa: BLE001 - tokenizers fail in many ways; the page must be made
        _note(notes, f"full prompts are not shown: could not rebuild them with the tokenizer of "
                     f"{checkpoint} ({type(exc).__name__}: {exc})")
        return {}


def load_extras(run_dir: Path, user_hashes: set[str], with_prompts: bool = True,
                given: PromptTexts | None = None, dataset: Dataset | None = None) -> Extras:
    """Cues, context and prompts for the run's users, as far as they can be had.

    Prompts come from what the run hands over (`given`: its own, decoded as its users
    finished), else from the dry run's prompts.jsonl, else they are rebuilt with the run's
    settings.
    """
    notes: list[str] = []
    identity = read_identity(run_dir, notes)
    if dataset is None:  # the run hands over the dataset it loaded: no second load
        dataset = _load_run_dataset(identity, notes) if identity else None
    if identity is None or dataset is None:
        return Extras({}, {}, tuple(notes))
    users = [u for u in dataset.users if u.user_hash in user_hashes]
    contexts = {(u.user_hash, it.location.key()): item_context(u, it)
                for u in users for it in u.items}
    prompts: Mapping[Key, RebuiltPrompt] = {}
    if with_prompts and given is not None:
        prompts = given.texts
        for note in given.notes:
            _note(notes, note)
    elif with_prompts and (run_dir / PROMPTS_FILE).is_file():
        prompts = read_prompts_file(run_dir / PROMPTS_FILE)
    elif with_prompts:
        prompts = rebuild_prompts(identity, users, notes)
    return Extras(contexts, prompts, tuple(notes))


def read_prompts_file(path: Path) -> dict[Key, RebuiltPrompt]:
    """prompts.jsonl of a dry run: the exact texts, no tokenizer needed."""
    import orjson

    out = {}
    for line in path.read_bytes().splitlines():
        row = orjson.loads(line)
        if "text" in row:
            loc = row["location"]
            key = (str(row["user_hash"]), f"{loc['record']}/{loc['collection']}/{loc['item']}")
            out[key] = RebuiltPrompt(row["text"], int(row["prompt_tokens"]))
    return out


def _location_order(item: UserItem) -> tuple[int, int, int]:
    loc = item.location
    return (loc.record, loc.collection, loc.item)


class PromptPacker:
    """Prompt texts for the page: a user's shared prefix stored once, within a size budget."""

    def __init__(self, budget_chars: int) -> None:
        self.prefixes: list[str] = []
        self.left = budget_chars
        self.omitted = 0

    def pack_user(self, texts: Sequence[str | None]) -> list[tuple[int | None, str | None]]:
        present = [t for t in texts if t is not None]
        if not present:
            return [(None, None)] * len(texts)
        shared = shared_prefix(present)
        cost = len(shared) + sum(len(t) - len(shared) for t in present)
        if cost > self.left:
            self.omitted += len(present)
            return [(None, None)] * len(texts)
        self.left -= cost
        self.prefixes.append(shared)
        index = len(self.prefixes) - 1
        return [(index, t[len(shared):]) if t is not None else (None, None) for t in texts]


def _card(user_index: int, item: UserItem, context: ItemContext | None,
          prompt: RebuiltPrompt | None, packed: tuple[int | None, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "u": user_index, "loc": item.location.key(), "pt": item.prompt_tokens,
        "tr": item.truncated, "s": list(item.generated_samples),
        "fr": list(item.finish_reasons), "ot": list(item.output_tokens),
        "ref": item.reference, "pp": packed[0], "ps": packed[1],
    }
    if context is not None:
        out |= {"cue": context.cue, "ctx": [list(t) for t in context.turns],
                "nctx": context.total_turns}
    if prompt is not None and prompt.num_tokens != item.prompt_tokens:
        out["pm"] = prompt.num_tokens  # the rebuilt prompt differs from what the run recorded
    return out


class Payload:
    """The page's data: users in test-file order, one card per item by location.

    The prompts are packed first (how many the budget leaves out is a note above the cards);
    the cards are made and written as JSON one at a time, never all held (at 100k items they
    were 0.2 GB of dicts, and their JSON a second copy).
    """

    def __init__(self, docs: Sequence[UserFile], extras: Extras, prompt_budget_chars: int) -> None:
        self.docs = sorted(docs, key=lambda d: min((_location_order(i) for i in d.items),
                                                   default=(-1, -1, -1)))
        self.extras = extras
        self.packer = PromptPacker(prompt_budget_chars)
        self.packed = [self.packer.pack_user([p.text if p else None for p in self._prompts(doc)])
                       for doc in self.docs]

    @property
    def prompts_omitted(self) -> int:
        return self.packer.omitted

    def _prompts(self, doc: UserFile) -> list[RebuiltPrompt | None]:
        return [self.extras.prompts.get((doc.key, it.location.key()))
                for it in sorted(doc.items, key=_location_order)]

    def json_parts(self, prompt_note: str | None) -> Iterator[bytes]:
        """The payload as JSON in pieces, safe inside a <script> element."""
        sep = b'{"items":['
        for index, (doc, packed) in enumerate(zip(self.docs, self.packed)):
            for item, pack in zip(sorted(doc.items, key=_location_order), packed):
                key = (doc.key, item.location.key())
                card = _card(index, item, self.extras.contexts.get(key),
                             self.extras.prompts.get(key), pack)
                yield sep + json_for_script(card)
                sep = b","
        users = [{"id": d.user_hash, "name": d.profile_name} for d in self.docs]
        yield (b"]" if sep == b"," else sep + b"]") + b',"users":' + json_for_script(users)
        yield (b',"prefixes":' + json_for_script(self.packer.prefixes) + b',"promptsOmitted":'
               + json_for_script(self.packer.omitted) + b',"promptNote":'
               + json_for_script(prompt_note) + b"}")
