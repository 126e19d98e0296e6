"""The benchmark's JSON arrays, read whole (small files) or one record at a time (train.json of
a large benchmark is gigabytes; its parsed tree would be several times that in memory)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, Iterator

import ijson
import orjson


class InputError(ValueError):
    """Input that cannot be used at all (not JSON, not a list of records, missing files)."""


def read_json_array(path: Path) -> list[Any]:
    """The whole file as a list of records, or one InputError naming the file."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except orjson.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of user records, got {type(data).__name__}")
    return data


def iter_json_array(path: Path) -> Iterator[Any]:
    """The file's records one at a time (ijson's C parser), so only one record's objects exist
    at once; the same InputError as read_json_array, naming the last good record where the
    JSON breaks."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    with handle:
        if first_byte(handle) != b"[":  # not an array: the whole-file reader says what it is
            read_json_array(path)
            raise InputError(f"{path}: expected a JSON array of user records")
        handle.seek(0)
        count = 0
        try:
            for record in ijson.items(handle, "item", use_float=True):
                yield record
                count += 1
        except (ijson.JSONError, UnicodeDecodeError) as err:
            where = f"after record [{count - 1}]" if count else "before the first record"
            raise InputError(f"{path}: not valid JSON {where} ({err})") from None


def first_byte(handle: BinaryIO) -> bytes:
    """The first byte that is not JSON whitespace (b"" for an empty file)."""
    while chunk := handle.read(4096):
        if stripped := chunk.lstrip(b" \t\r\n"):
            return stripped[:1]
    return b""
