"""Converters from public raw corpora to the benchmark schema.

`python -m inference_core.convert cornell SRC_DIR OUT_DIR` (Cornell Movie-Dialogs -> Chameleons-style)
`python -m inference_core.convert dmsc DMSC.csv OUT_DIR` (Douban Movie Short Comments)

Each writes train.json, test_leaderboard.json (last item per user, without `continuation`) and
references.json ({"record/collection/item": reference}) into OUT_DIR, all or nothing.
"""
from inference_core.data.convert.common import ConversionSummary, SourceError
from inference_core.data.convert.cornell import convert_cornell
from inference_core.data.convert.dmsc import convert_dmsc

__all__ = ["ConversionSummary", "SourceError", "convert_cornell", "convert_dmsc"]
