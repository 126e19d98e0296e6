"""script_ratio: a Japanese reply must be mostly kana and kanji to be usable.

Their RealPersonaChat script dropped outputs under 30% kana/kanji (romaji, English, emoji
strings); the share counts letters and digits only, so punctuation and symbols neither help
nor hurt. Kanji alone also pass: Chinese text is not told apart from Japanese here.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Mapping

from inference_core.data.records import TestItem
from inference_core.errors import ConfigError
from inference_core.outputs.stage import HandledSample, Stage, register

DEFAULT_MIN_RATIO = 0.3
JAPANESE_RANGES = (
    (0x3040, 0x309F),  # hiragana
    (0x30A0, 0x30FF),  # katakana (with the long-vowel mark)
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
)


def is_japanese(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in JAPANESE_RANGES) or ch in "々〆ヵヶ"


def counts_as_text(ch: str) -> bool:
    """Letters and digits of any script; punctuation, symbols, emoji and spaces do not count."""
    return unicodedata.category(ch)[0] in "LN"


def japanese_share(text: str) -> float | None:
    """Share of kana/kanji among the text's letters and digits; None when it has none."""
    chars = [ch for ch in text if counts_as_text(ch)]
    if not chars:
        return None
    return sum(map(is_japanese, chars)) / len(chars)


@register("script_ratio")
def script_ratio(options: Mapping[str, Any]) -> Stage:
    minimum = options.get("min_script_ratio", DEFAULT_MIN_RATIO)
    if isinstance(minimum, bool) or not isinstance(minimum, (int, float)) or not 0 <= minimum <= 1:
        raise ConfigError(f"dataset.output_handler_options.min_script_ratio={minimum!r}: "
                          f"give a share between 0 and 1 (e.g. 0.3)")

    def stage(sample: HandledSample, item: TestItem, stop_reason: str | None,
              ) -> HandledSample | None:
        share = japanese_share(sample.text)
        return sample if share is not None and share >= minimum else None

    return stage
