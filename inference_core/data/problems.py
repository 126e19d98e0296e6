"""Warnings about a benchmark's input, counted by kind: the first few logged in full, then
only counts, each kind with a few places (a 100k-user file with one odd field per record must
not log 100k lines, nor grow a message per distinct value). Numbers where text is expected are
often legitimate (epoch timestamps, ratings, numeric ids): they are told once per file and
field, with their count."""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("inference_core.data.loader")  # where users have always seen them

MAX_LOGGED_WARNINGS = 25
MAX_EXAMPLES = 3  # places kept per kind of warning for the totals
INDEX = re.compile(r"\[\d+\]")


@dataclass
class Problems:
    """Collects warnings about the input by kind: logs the first few in full, then counts them,
    keeping a few places of each kind for the totals."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0
    # (file, field with its indices taken out, use) -> [count, first place]
    numbers: dict[tuple[str, str, str], list] = field(default_factory=dict)

    def number(self, where: str, value: Any, use: str) -> None:
        """A number read as `use` ("text", "id"): counted per file and field, logged by
        log_totals as one line each."""
        file, bracket, rest = where.partition("[")
        key = (file, INDEX.sub("[*]", bracket + rest), use)
        entry = self.numbers.get(key)
        if entry is None:
            self.numbers[key] = [1, f"{where}: number {value!r} used as {use}"]
        else:
            entry[0] += 1

    def warn(self, where: str, message: str, kind: str | None = None) -> None:
        """`kind`: the message's kind where the caller knows it (saves the pattern match)."""
        kind = kind or kind_of(message)
        self.counts[kind] += 1
        self.total += 1
        places = self.examples.setdefault(kind, [])
        if len(places) < MAX_EXAMPLES:
            places.append(f"{where}: {message}")
        if self.total <= MAX_LOGGED_WARNINGS:
            log.warning("%s: %s", where, message)
        elif self.total == MAX_LOGGED_WARNINGS + 1:
            log.warning("more input warnings follow; only their counts are logged")

    def log_totals(self) -> None:
        for (file, path, use), (n, example) in self.numbers.items():
            log.warning("%s: %d number%s used as %s at %s (e.g. %s)", file, n,
                        "" if n == 1 else "s", use, path or file, example)
        for kind, n in self.counts.most_common():
            if n > 1:
                log.warning("%d times: %s (e.g. %s)", n, kind, "; ".join(self.examples[kind]))


def kind_of(message: str) -> str:
    """A warning's kind: its message with quoted or numeric values taken out."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d+(\.\d+)?", "…", message)
