"""Warnings about a benchmark's input, counted by kind: the first few logged in full, then
only counts, each kind with a few places (a 100k-user file with one odd field per record must
not log 100k lines, nor grow a message per distinct value)."""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("inference_core.data.loader")  # where users have always seen them

MAX_LOGGED_WARNINGS = 25
MAX_EXAMPLES = 3  # places kept per kind of warning for the totals


@dataclass
class Problems:
    """Collects warnings about the input by kind: logs the first few in full, then counts them,
    keeping a few places of each kind for the totals."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    total: int = 0

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
        for kind, n in self.counts.most_common():
            if n > 1:
                log.warning("%d times: %s (e.g. %s)", n, kind, "; ".join(self.examples[kind]))


def kind_of(message: str) -> str:
    """A warning's kind: its message with quoted or numeric values taken out."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|-?\d+(\.\d+)?", "…", message)
