"""Command line: `python -m inference_core.convert {cornell,dmsc} SRC OUT_DIR [options]`."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from inference_core.command import CommandParser
from inference_core.data.convert.common import ConversionSummary, SourceError
from inference_core.data.convert.cornell import convert_cornell
from inference_core.data.convert.dmsc import convert_dmsc

log = logging.getLogger("inference_core.convert")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per corpus."""
    parser = CommandParser(
        "python -m inference_core.convert",
        "convert a raw public corpus (Cornell movie-dialogs, DMSC.csv) into the benchmark schema "
        "(train.json, test_leaderboard.json, references.json)",
    )
    sub = parser.add_subparsers(dest="corpus", required=True)
    cornell = sub.add_parser("cornell", help="Cornell Movie-Dialogs corpus (folder of the four movie_*.txt files)")
    cornell.add_argument("src_dir", help="folder holding movie_lines.txt, movie_conversations.txt, ...")
    cornell.add_argument("out_dir", help="folder to write the benchmark files into")
    cornell.add_argument("--min-items", type=_positive_int, default=2, help="drop users with fewer items (default 2)")
    cornell.add_argument(
        "--max-context-turns", type=_positive_int, default=None, help="keep only the last K earlier turns (default all)"
    )
    dmsc = sub.add_parser("dmsc", help="Douban Movie Short Comments (DMSC.csv)")
    dmsc.add_argument("csv_path", help="the DMSC.csv file")
    dmsc.add_argument("out_dir", help="folder to write the benchmark files into")
    dmsc.add_argument("--min-items", type=_positive_int, default=2, help="drop users with fewer reviews (default 2)")
    return parser


def run(args: argparse.Namespace) -> ConversionSummary:
    """Run the conversion the parsed arguments ask for."""
    if args.corpus == "cornell":
        return convert_cornell(args.src_dir, args.out_dir, args.min_items, args.max_context_turns)
    return convert_dmsc(args.csv_path, args.out_dir, args.min_items)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a bad source or an unwritable OUT_DIR)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except SourceError as exc:
        log.error("bad source, nothing written: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot write %s, nothing written: %s", args.out_dir, exc)
        return 2
    print(summary.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
