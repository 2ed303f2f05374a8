"""Reading published annotation files line by line, so a bad entry is reported by file and line.

`json_entries` walks a JSON array entry by entry (the Something-Something V2 and Diving48 files) and gives
each entry with the line it starts on; `csv_rows` gives CSV rows (Moments in Time, Something-Something V1's
`;`-separated lists) with their line numbers. `label_index` looks a label up and names file and line when
it is not in the label file. `match_ids` maps the ids an annotation file names (`78687`,
`bouncing/giphy-abc`) onto the video ids extract-frames gave (paths below VIDEO_DIR without the extension:
`20bn-something-something-v2/78687`, `training/bouncing/giphy-abc`) by whole trailing path components.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.text import MAX_JSON_LINE_CHARS, MAX_LINE_CHARS, bounded_text, check_nesting


JSON_SPACE = re.compile(r"[ \t\r\n]*")


def json_text(path: Path, what: str) -> str:
    """The text of a JSON file, bounded (`text.bounded_text`) and nested no deeper than `text.MAX_JSON_DEPTH`."""
    text = bounded_text(path, what, max_line=MAX_JSON_LINE_CHARS)
    check_nesting(text, path, what)
    return text


def json_document(path: Path, what: str):
    """The whole JSON document; a syntax error names the file and line."""
    text = json_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise TsnpipeError(f"{path} line {error.lineno}: not valid JSON ({error.msg}); "
                           f"replace it with the published file ({what}).") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise TsnpipeError(f"{path}: not valid JSON ({str(error)[:80]}); replace it with the published file ({what}).") from None


def json_entries(path: Path, what: str) -> Iterator[tuple[int, object]]:
    """(line, entry) for each entry of the JSON array in `path`; a syntax error, or an entry longer than any
    published one (`MAX_LINE_CHARS`), names the file and line."""
    text = json_text(path, what)
    decoder = json.JSONDecoder()
    position, line = 0, 1

    def skip_space(at: int) -> int:
        return JSON_SPACE.match(text, at).end()  # in C: a file of blanks between entries is no Python loop

    def fail(at: int, message: str):
        raise TsnpipeError(f"{path} line {text.count(chr(10), 0, at) + 1}: {message}; "
                           f"replace it with the published file ({what}).")

    position = skip_space(0)
    if position >= len(text) or text[position] != "[":
        fail(position, "not a JSON list of entries")
    position = skip_space(position + 1)
    counted = 0
    if position < len(text) and text[position] == "]":
        return
    while True:
        line += text.count("\n", counted, position)
        counted = position
        try:
            entry, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            fail(error.pos, f"not valid JSON ({error.msg})")
        except ValueError as error:  # e.g. an integer of more than 4,300 digits
            fail(position, f"not valid JSON ({str(error)[:80]})")
        if end - position > MAX_LINE_CHARS:
            fail(position, f"an entry of {end - position:,} characters, longer than any published one")
        yield line, entry
        position = skip_space(end)
        if position < len(text) and text[position] == ",":
            position = skip_space(position + 1)
        elif position < len(text) and text[position] == "]":
            if skip_space(position + 1) != len(text):
                fail(position + 1, "text after the end of the list")
            return
        else:
            fail(position, "expected ',' or ']' between entries")


def csv_rows(path: Path, what: str, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of each non-empty row; fields stripped of spaces."""
    text = bounded_text(path, what)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            if any(field.strip() for field in row):
                yield reader.line_num, [field.strip() for field in row]
    except csv.Error as error:
        raise TsnpipeError(f"{path} line {reader.line_num}: not valid CSV ({error}); "
                           f"replace it with the published file ({what}).") from None


def label_index(label_of: dict[str, int], name: str, path: Path, line: int, label_file: Path) -> int:
    if name not in label_of:
        raise TsnpipeError(f"{path} line {line}: label {name!r} is not in {label_file}; "
                           "use the annotation and label files of one release.")
    return label_of[name]


def entry_field(entry: object, key: str, path: Path, line: int, what: str):
    if not isinstance(entry, dict) or key not in entry:
        raise TsnpipeError(f"{path} line {line}: the entry has no {key!r}; replace it with the published file ({what}).")
    return entry[key]


def entry_id(entry: object, key: str, path: Path, line: int, what: str) -> str:
    """An entry's video id: a non-empty string, or a whole number as some releases write it (never 0.7, true, null)."""
    value = entry_field(entry, key, path, line, what)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise TsnpipeError(f"{path} line {line}: {key} {json.dumps(value)[:80]} is not a video id (a name or a whole "
                           f"number); replace it with the published file ({what}).")
    return str(value).strip()


def match_ids(listed: Iterable[str], extracted: Iterable[str]) -> dict[str, str]:
    """listed id -> extracted video id: the same id, or the only extracted id ending in `/<listed id>`.

    Ids that match nothing (or more than one video) are left out; they become missing videos."""
    extracted = list(extracted)
    exact = set(extracted)
    by_tail: dict[str, str | None] = {}
    for video_id in extracted:
        parts = video_id.split("/")
        for i in range(1, len(parts)):
            tail = "/".join(parts[i:])
            by_tail[tail] = None if tail in by_tail else video_id  # None: ambiguous
    found = {}
    for name in listed:
        if name in exact:
            found[name] = name
        elif by_tail.get(name):
            found[name] = by_tail[name]
    return found


def with_extracted_ids(entries, extracted: Iterable[str]):
    """The entries table with each listed id replaced by the extracted video id it matches (`match_ids`);
    unmatched ids stay as listed and are reported missing by `tables.build_split`."""
    found = match_ids(entries["video_id"], extracted)
    return entries.assign(video_id=[found.get(v, v) for v in entries["video_id"]])


def classes_in_id_order(by_id: dict[int, str], path, published: str) -> list[str]:
    """Class names by id, once the ids are exactly 0..n-1 (a label file with gaps or no classes is refused)."""
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise TsnpipeError(f"{path}: class ids are not 0..{len(by_id) - 1}; use the published {published}.")
    return [by_id[i] for i in range(len(by_id))]
