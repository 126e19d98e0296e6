"""Cornell Movie-Dialogs corpus -> Chameleons-style benchmark (one user per movie character)."""
from __future__ import annotations

import ast
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_core.data.convert.common import (
    ConversionStats,
    ConversionSummary,
    ConvertedItem,
    ConvertedUser,
    SourceError,
    SourceTurn,
    TaskText,
    keep_users,
    stable_hash,
    write_dataset,
)

log = logging.getLogger(__name__)

SEPARATOR = " +++$+++ "
ENCODING = "iso-8859-1"
LINES_FILE = "movie_lines.txt"
CONVERSATIONS_FILE = "movie_conversations.txt"
CHARACTERS_FILE = "movie_characters_metadata.txt"
TITLES_FILE = "movie_titles_metadata.txt"
SOURCE_FILES = (LINES_FILE, CONVERSATIONS_FILE, CHARACTERS_FILE, TITLES_FILE)
UNKNOWN = {"", "?"}

TASK = TaskText(
    description="Continue the movie dialogue as this character.",
    collection_type="dialogue",
    type_desc="Lines this movie character said, each after the dialogue that led to it.",
)


@dataclass(frozen=True, slots=True)
class Movie:
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Character:
    name: str
    movie_title: str
    gender: str | None
    position: int | None


@dataclass(frozen=True, slots=True)
class Line:
    character_id: str
    movie_id: str
    speaker: str
    text: str


def read_records(path: Path, n_fields: int, text_last: bool = False) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for every non-blank line of a ` +++$+++ `-separated file.

    With `text_last`, the last field is free text and may itself contain the separator.
    """
    try:
        fh = path.open(encoding=ENCODING, newline="\n")
    except OSError as exc:
        raise SourceError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if line.endswith(SEPARATOR.rstrip()):
                line += " "  # an empty last field whose trailing space was stripped
            fields = line.split(SEPARATOR, n_fields - 1 if text_last else -1)
            if len(fields) != n_fields:
                raise SourceError(
                    path, lineno, f"expected {n_fields} fields separated by '{SEPARATOR.strip()}', found {len(fields)}"
                )
            yield lineno, [f.strip() for f in fields]


def parse_list(path: Path, lineno: int, text: str) -> list[str]:
    """Parse a Python-style list of strings such as `['L194', 'L195']`."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise SourceError(path, lineno, f"cannot parse the list {text!r}") from exc
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SourceError(path, lineno, f"expected a list of strings, found {text!r}")
    return value


def read_movies(path: Path) -> dict[str, Movie]:
    """movie id -> title, year (the digits of e.g. `1989/I`) and genres."""
    movies: dict[str, Movie] = {}
    for lineno, (movie_id, title, year, _rating, _votes, genres) in read_records(path, 6):
        match = re.match(r"\d{4}", year)
        movies[movie_id] = Movie(title, int(match.group()) if match else None, tuple(parse_list(path, lineno, genres)))
    return movies


def read_characters(path: Path) -> dict[str, Character]:
    """character id -> name, movie title, gender and credit position (None where unknown)."""
    characters: dict[str, Character] = {}
    for _lineno, (char_id, name, _movie_id, title, gender, position) in read_records(path, 6):
        characters[char_id] = Character(
            name=name,
            movie_title=title,
            gender=None if gender in UNKNOWN else gender.lower(),
            position=int(position) if position.isdigit() else None,
        )
    return characters


def read_lines(
    path: Path, characters: Mapping[str, Character], stats: ConversionStats
) -> tuple[dict[str, Line], set[str]]:
    """line id -> Line, and the ids of lines with empty text (left out and counted)."""
    lines: dict[str, Line] = {}
    empty: set[str] = set()
    for _lineno, (line_id, char_id, movie_id, speaker, text) in read_records(path, 5, text_last=True):
        if not text:
            stats.skipped_rows["empty line text"] += 1
            empty.add(line_id)
            continue
        if not speaker:
            speaker = characters[char_id].name if char_id in characters else char_id
        lines[line_id] = Line(char_id, movie_id, speaker, text)
    return lines, empty


def conversations(path: Path, lines: Mapping[str, Line], known_empty: set[str]) -> Iterator[list[Line]]:
    """Each conversation's lines in order, in file order (empty lines left out)."""
    for lineno, (_u1, _u2, _movie_id, line_ids) in read_records(path, 4):
        turns = []
        for line_id in parse_list(path, lineno, line_ids):
            if line_id in lines:
                turns.append(lines[line_id])
            elif line_id not in known_empty:
                raise SourceError(path, lineno, f"line id {line_id!r} is not in {LINES_FILE}")
        yield turns


def collect_items(
    path: Path, lines: Mapping[str, Line], known_empty: set[str], max_context_turns: int | None
) -> tuple[dict[tuple[str, str], list[ConvertedItem]], dict[tuple[str, str], str]]:
    """(movie id, character id) -> the character's items in corpus order, and -> its first speaker name."""
    items: dict[tuple[str, str], list[ConvertedItem]] = {}
    names: dict[tuple[str, str], str] = {}
    for turns in conversations(path, lines, known_empty):
        sources = [SourceTurn(t.speaker, t.text) for t in turns]
        for i in range(1, len(turns)):
            start = 0 if max_context_turns is None else max(0, i - max_context_turns)
            line = turns[i]
            key = (line.movie_id, line.character_id)
            items.setdefault(key, []).append(ConvertedItem(tuple(sources[start:i]), f"{line.speaker}: ", line.text))
            names.setdefault(key, line.speaker)
    return items, names


def profile_of(
    movie_id: str, char_id: str, speaker: str, characters: Mapping[str, Character], movies: Mapping[str, Movie]
) -> dict[str, Any]:
    """The character's profile; unknown values are left out."""
    character = characters.get(char_id)
    movie = movies.get(movie_id)
    profile: dict[str, Any] = {"name": speaker}
    if character and character.gender:
        profile["gender"] = character.gender
    if character and character.position is not None:
        profile["credit_position"] = character.position
    title = movie.title if movie else (character.movie_title if character else "")
    if title:
        profile["movie_title"] = title
    if movie and movie.year is not None:
        profile["year"] = movie.year
    if movie and movie.genres:
        profile["genres"] = list(movie.genres)
    return profile


def convert_cornell(
    src_dir: str | Path, out_dir: str | Path, min_items: int = 2, max_context_turns: int | None = None
) -> ConversionSummary:
    """Convert the four Cornell files in `src_dir` and write the benchmark files into `out_dir`."""
    if min_items < 1:
        raise ValueError("min_items must be at least 1")
    if max_context_turns is not None and max_context_turns < 1:
        raise ValueError("max_context_turns must be at least 1")
    src = Path(src_dir)
    for name in SOURCE_FILES:
        if not (src / name).is_file():
            raise SourceError(src / name, None, "file not found")
    stats = ConversionStats()
    movies = read_movies(src / TITLES_FILE)
    characters = read_characters(src / CHARACTERS_FILE)
    lines, empty = read_lines(src / LINES_FILE, characters, stats)
    items, names = collect_items(src / CONVERSATIONS_FILE, lines, empty, max_context_turns)
    log.info("cornell: %d lines, %d characters with items", len(lines), len(items))
    users = [
        ConvertedUser(
            user_hash=stable_hash(movie_id, char_id),
            profile=profile_of(movie_id, char_id, names[movie_id, char_id], characters, movies),
            items=tuple(user_items),
        )
        for (movie_id, char_id), user_items in items.items()
    ]
    return write_dataset("cornell", Path(out_dir), keep_users(users, min_items, stats), TASK, stats)
