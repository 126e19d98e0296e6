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
from inference_core.likelihood.summary import figures_of, option_shares, worst_first
from inference_core.rundir.layout import IDENTITY_FILE, PROMPTS_FILE, UserFile, UserItem
from inference_core.report.html import json_for_script
from inference_core.report.prompt_texts import (Key, PromptStore, PromptTexts, RebuiltPrompt,
                                                 pack_user)
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
    """The parts that need the dataset and the checkpoint; empty where they were unreachable.
    Contexts are made a user at a time, as the page writes that user's cards."""

    users: Mapping[str, UserRecord]
    prompts: PromptStore
    notes: tuple[str, ...]

    def contexts(self, user_hash: str) -> dict[str, ItemContext]:
        """One user's item contexts by location key; empty for a user the dataset lacks."""
        user = self.users.get(user_hash)
        if user is None:
            return {}
        return {it.location.key(): item_context(user, it) for it in user.items}


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
                    ) -> PromptStore:
    """Every item's prompt as the engine got it: same builder, same settings, decoded ids."""
    from inference_core.run.job import Job
    from inference_core.run.prompting import load_tokenizer, prompt_builder

    checkpoint = str(identity.get("checkpoint") or "")
    try:
        tokenizer = load_tokenizer(Path(checkpoint))
        job = Job.from_identity(identity, Path(str(identity.get("test_file", "."))).parent)
        prompts, _ = build_prompts(prompt_builder(job, tokenizer), users)
        return PromptStore.from_texts(((p.user_hash, p.location.key()), RebuiltPrompt(
            tokenizer.decode(list(p.token_ids), skip_special_tokens=False,
                             clean_up_tokenization_spaces=False), p.num_tokens))
            for p in prompts)
    except Exception as exc:  # noqa: BLE001 - tokenizers fail in many ways; the page must be made
        _note(notes, f"full prompts are not shown: could not rebuild them with the tokenizer of "
                     f"{checkpoint} ({type(exc).__name__}: {exc})")
        return PromptStore()


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
        return Extras({}, PromptStore(), tuple(notes))
    users = [u for u in dataset.users if u.user_hash in user_hashes]
    prompts = PromptStore()
    if with_prompts and given is not None:
        prompts = given.store
        for note in given.notes:
            _note(notes, note)
    elif with_prompts and (run_dir / PROMPTS_FILE).is_file():
        prompts = read_prompts_file(run_dir / PROMPTS_FILE)
    elif with_prompts:
        prompts = rebuild_prompts(identity, users, notes)
    return Extras({u.user_hash: u for u in users}, prompts, tuple(notes))


def read_prompts_file(path: Path) -> PromptStore:
    """prompts.jsonl of a dry run: the exact texts, no tokenizer needed."""
    import orjson

    def texts() -> Iterator[tuple[Key, RebuiltPrompt]]:
        with path.open("rb") as lines:
            for line in lines:
                row = orjson.loads(line)
                if "text" in row:
                    loc = row["location"]
                    yield ((str(row["user_hash"]),
                            f"{loc['record']}/{loc['collection']}/{loc['item']}"),
                           RebuiltPrompt(row["text"], int(row["prompt_tokens"])))

    return PromptStore.from_texts(texts())


def _location_order(item: UserItem) -> tuple[int, int, int]:
    loc = item.location
    return (loc.record, loc.collection, loc.item)


def _card(user_index: int, item: UserItem, context: ItemContext | None,
          prefix: int | None, rest: tuple[str, int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "u": user_index, "loc": item.location.key(), "pt": item.prompt_tokens,
        "tr": item.truncated, "s": list(item.generated_samples),
        "fr": list(item.finish_reasons), "ot": list(item.output_tokens),
        "ref": item.reference, "pp": prefix if rest is not None else None,
        "ps": rest[0] if rest is not None else None,
    }
    if context is not None:
        out |= {"cue": context.cue, "ctx": [list(t) for t in context.turns],
                "nctx": context.total_turns}
    if rest is not None and rest[1] != item.prompt_tokens:
        out["pm"] = rest[1]  # the rebuilt prompt differs from what the run recorded
    figures = figures_of(item)
    if figures is not None:
        out["lk"] = card_figures(figures)
    return out


def card_figures(figures: Mapping[str, Any]) -> dict[str, Any]:
    """An item's likelihood figures for its card, each option with its share of the mass."""
    options = figures.get("options")
    if not options:
        return dict(figures)
    shares = option_shares([o["logprob"] for o in options])
    return {**figures, "options": [{**o, "p": p} for o, p in zip(options, shares)]}


Packed = tuple[int | None, list[tuple[str, int] | None]]  # prefix index; (rest, tokens) per item


class Payload:
    """The page's data: users in test-file order, one card per item by location.

    The prompts are packed first (a user's shared prefix once, within the page's budget; how
    many the budget leaves out is a note above the cards). The texts are the PromptStore's own
    strings, indexed, not copied. The cards, each user's contexts and the prefixes are made and
    written as JSON one at a time, never all held (at 100k items the cards were 0.2 GB of dicts,
    and their JSON a second copy).
    """

    def __init__(self, docs: Sequence[UserFile], extras: Extras, prompt_budget_chars: int) -> None:
        self.docs = sorted(docs, key=lambda d: min((_location_order(i) for i in d.items),
                                                   default=(-1, -1, -1)))
        self.extras = extras
        self.left = prompt_budget_chars
        self.prompts_omitted = 0
        self.prefixes: list[str] = []
        self.packed = [self._pack(doc) for doc in self.docs]
        self.order = self._worst_first()

    def _worst_first(self) -> list[int] | None:
        """The cards' indices, worst predicted first, for a run that scored likelihoods."""
        figures = [figures_of(item) for doc in self.docs
                   for item in sorted(doc.items, key=_location_order)]
        if all(f is None for f in figures):
            return None
        return sorted(range(len(figures)), key=lambda k: worst_first(figures[k]))

    def _pack(self, doc: UserFile) -> Packed:
        """The user's prompts as the page stores them, or none when over the budget. The store
        packed them over all the user's prompts; packing the rests of those this file holds
        again finds what they still share (nothing, unless the file lacks some): no copies."""
        user = self.extras.prompts.users.get(doc.key)
        locations = [it.location.key() for it in sorted(doc.items, key=_location_order)]
        rests = user.rests if user is not None else {}
        found = [(loc, *rests[loc]) for loc in locations if loc in rests]
        if not found:
            return None, [None] * len(locations)
        page = pack_user(found)
        if len(user.prefix) + page.cost > self.left:
            self.prompts_omitted += len(found)
            return None, [None] * len(locations)
        self.left -= len(user.prefix) + page.cost
        self.prefixes.append(user.prefix + page.prefix)
        return len(self.prefixes) - 1, [page.rests.get(loc) for loc in locations]

    def json_parts(self, prompt_note: str | None) -> Iterator[bytes]:
        """The payload as JSON in pieces, safe inside a <script> element."""
        sep = b'{"items":['
        for index, (doc, (prefix, rests)) in enumerate(zip(self.docs, self.packed)):
            contexts = self.extras.contexts(doc.key)
            for item, rest in zip(sorted(doc.items, key=_location_order), rests):
                card = _card(index, item, contexts.get(item.location.key()), prefix, rest)
                yield sep + json_for_script(card)
                sep = b","
        users = [{"id": d.user_hash, "name": d.profile_name} for d in self.docs]
        yield (b"]" if sep == b"," else sep + b"]") + b',"users":' + json_for_script(users)
        yield b',"prefixes":['
        for n, prefix in enumerate(self.prefixes):
            yield (b"," if n else b"") + json_for_script(prefix)
        yield (b'],"order":' + json_for_script(self.order)
               + b',"promptsOmitted":' + json_for_script(self.prompts_omitted)
               + b',"promptNote":' + json_for_script(prompt_note) + b"}")
