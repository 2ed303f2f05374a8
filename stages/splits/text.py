"""Reading an annotation or list file as text, within bounds, so a damaged or hostile file is one sentence.

Every reader of a split source goes through `bounded_text`: the file must exist, hold at most `MAX_FILE_BYTES`
(published annotation files are tens of MB, a few 100 MB or so at most), be UTF-8 (a byte order mark
is dropped), and keep each line within `MAX_LINE_CHARS` (`MAX_JSON_LINE_CHARS` for JSON, which may be one line),
refused as soon as a line runs past it, so a file of one endless line never sits whole in memory. A JSON
document may nest at most `MAX_JSON_DEPTH` brackets deep (the published files nest 3), checked before Python's recursive
decoder sees it. The other bounds every reader shares: a class id (a label) below `MAX_CLASSES`, and a
class name that stays one line of classes.txt and is given once (`check_class_names`).

Errors name the file and the line, and what to do.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tsnpipe.stages.errors import TsnpipeError

MAX_FILE_BYTES = 512 * 2**20
READ_CHUNK = 16 * 2**20
MAX_LINE_CHARS = 65_536  # a clip's line is under 200 characters; HVU's longest tag list a few thousand
MAX_JSON_LINE_CHARS = 64 * 2**20  # a JSON file may be one line (Diving48's are); its entries are bounded one by one
MAX_JSON_DEPTH = 32
MAX_CLASSES = 100_000  # HVU, the largest label set, has 3,142 tags
CLASS_ID = re.compile(r"[0-9]{1,6}")  # ASCII digits only: `²`.isdigit() is True, int('²') fails
LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits on


def line_of(data: bytes | str, at: int) -> int:
    """The 1-based line holding offset `at`."""
    return data.count(b"\n" if isinstance(data, bytes) else "\n", 0, at) + 1


def read_bounded(handle, max_line_bytes: int) -> tuple[bytes, int | None]:
    """(the bytes, None), or (b"", the line) as soon as a line runs past `max_line_bytes`: read in chunks, so
    a file that is one long line is refused having held one chunk, not the whole line."""
    chunks, line, current = [], 1, 0  # current: bytes of the line read so far
    while chunk := handle.read(READ_CHUNK):
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
        lengths = np.diff(np.concatenate(([-1], ends))) if len(ends) else np.zeros(0, dtype=np.int64)
        if len(ends):
            lengths[0] += current
        long = np.flatnonzero(lengths > max_line_bytes + 1)
        if len(long):
            return b"", line + int(long[0])
        current = (len(chunk) - 1 - int(ends[-1])) if len(ends) else current + len(chunk)
        if current > max_line_bytes:
            return b"", line + len(ends)
        line += len(ends)
        chunks.append(chunk)
    return b"".join(chunks), None


def bounded_text(path: Path, what: str, max_line: int = MAX_LINE_CHARS) -> str:
    """The file's text, checked as the module docstring says; a line longer than `max_line` characters is refused
    having read at most one chunk past it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise TsnpipeError(f"{path} holds {size / 2**20:,.0f} MB, more than any published annotation file "
                               f"({MAX_FILE_BYTES // 2**20} MB at most); point at {what}.")
        with open(path, "rb") as handle:
            data, long = read_bounded(handle, 4 * max_line)  # UTF-8: 4 bytes a character at most
    except FileNotFoundError:
        raise TsnpipeError(f"{path} does not exist; point at the folder holding {what}.") from None
    except IsADirectoryError:
        raise TsnpipeError(f"{path} is a folder, not a file; point at {what}.") from None
    except PermissionError:
        raise TsnpipeError(f"{path} cannot be read (permission denied); make it readable ({what}).") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TsnpipeError(f"{path} line {line_of(data, error.start)} is not UTF-8 text; save the file as UTF-8 "
                           f"or use it as published ({what}).") from None
    text = text.removeprefix("\ufeff")
    if long is None and len(text) > max_line:
        long = next((n for n, line in enumerate(text.split("\n"), 1) if len(line) > max_line), None)
    if long is not None:
        raise TsnpipeError(f"{path} line {long} is longer than any record of {what} ({max_line:,} characters "
                           "at most); fix or delete that line.")
    return text


def check_nesting(text: str, path: Path, what: str) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH (Python's decoder recurses once per bracket).

    Brackets are counted wherever they stand, inside strings too: one linear pass over the bytes, which a
    string-aware pattern cannot promise on hostile input (`\\"` repeated). A string would need dozens of
    unclosed brackets to count as deep; the published files have none."""
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if not len(data):
        return
    steps = ((data == ord("[")) | (data == ord("{"))).astype(np.int8) - ((data == ord("]")) | (data == ord("}"))).astype(np.int8)
    depth = np.cumsum(steps, dtype=np.int32)
    if depth.max() > MAX_JSON_DEPTH:
        at = int(np.argmax(depth > MAX_JSON_DEPTH))
        line = int(np.count_nonzero(data[:at] == 10)) + 1
        raise TsnpipeError(f"{path} line {line}: the JSON nests more than {MAX_JSON_DEPTH} brackets deep, which no "
                           f"published annotation file does; replace it with the published file ({what}).")


def class_id(text: str) -> int | None:
    """A class id written as ASCII digits below MAX_CLASSES, else None."""
    if CLASS_ID.fullmatch(text) and int(text) < MAX_CLASSES:
        return int(text)
    return None


def check_class_names(names: list[str], path: Path, lines: list[int] | None = None) -> list[str]:
    """Class names that each fit one line of classes.txt, given once, at most MAX_CLASSES of them."""
    where = lambda i: f"{path} line {lines[i]}" if lines else f"{path}"  # noqa: E731
    if not names:
        raise TsnpipeError(f"{path} names no classes; use the published label file.")
    if len(names) > MAX_CLASSES:
        raise TsnpipeError(f"{path} names {len(names):,} classes, more than {MAX_CLASSES:,}; use the published label file.")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name.strip() or LINE_BREAKS.search(name):
            raise TsnpipeError(f"{where(i)}: class name {name[:80]!r} is empty or holds a line break, so it cannot be "
                               "one line of classes.txt; fix that name.")
        if name in seen:
            raise TsnpipeError(f"{where(i)}: class {name[:80]!r} is named twice (also class {seen[name]}); "
                               "give each class once, or use the published label file.")
        seen[name] = i
    return names
