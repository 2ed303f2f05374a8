"""What every split source shares: the entries table, reading list files, the Split, and writing
`W/splits/<source>/split<N>/`.

Each source becomes one table of entries (video_id, subset, label) plus the class list; `build_split`
joins it with the frames (and flow) manifest so every listed video gets its frame and flow-pair counts,
and videos the lists name but that were not extracted (or failed) are listed as missing, not fatal.
`split_files` renders the files of the split folder as bytes: the same input always gives byte-identical
files. Labels are 0-based.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.escapes import ESCAPES
from tsnpipe.stages.splits.text import bounded_text

SOURCES = ("ucf101", "hmdb51", "folders", "kinetics400", "kinetics600", "kinetics700", "list", "sthv2", "sthv1",
           "diving48", "mit", "mmit", "hvu")
SPLIT_NUMBERS = (1, 2, 3)
WHITESPACE = re.compile(r"\s")  # what str.split() splits on
COLUMNS = ["video_id", "label", "class_name", "frames", "flow_pairs"]


@dataclass(frozen=True)
class Split:
    """One split, ready to write: the class list, train and test tables, and what was missing upstream."""

    source: str
    number: int
    classes: list[str]
    train: pd.DataFrame  # COLUMNS
    test: pd.DataFrame  # COLUMNS
    missing: pd.DataFrame  # subset, video_id, reason
    params: dict = field(default_factory=dict)


def read_lines(path: Path) -> list[str]:
    """Non-empty lines without their CRLF/LF ends and surrounding spaces."""
    text = bounded_text(path, "the official split files")
    return [line.strip() for line in text.splitlines() if line.strip()]


def entries_table(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "subset", "label"]).astype({"label": "int64"})


def isin(values: pd.Series, of) -> np.ndarray:
    """`values.isin(of)` for strings, in pyarrow: pandas' own loops in Python over arrow-backed strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.is_in(pa.array(values, type=pa.large_string()), value_set=pa.array(of, type=pa.large_string()))
    return found.to_numpy(zero_copy_only=False)


def check_disjoint(entries: pd.DataFrame, where: Path) -> pd.DataFrame:
    twice = entries[entries.duplicated("video_id", keep=False)]
    if len(twice):
        raise TsnpipeError(f"The split files in {where} list {twice.video_id.iloc[0]} more than once; fix or replace those files.")
    return entries


def build_split(source: str, number: int, classes: list[str], entries: pd.DataFrame, frames: pd.DataFrame,
                flow: pd.DataFrame | None = None, params: dict | None = None) -> Split:
    """Join entries with the frames (and flow) manifest: counts for done videos, the rest listed as missing."""
    done = frames[frames["status"] == "done"].set_index("video_id")["frames"]
    failed = frames.loc[frames["status"] != "done", "video_id"]
    pairs = flow[flow["status"] == "done"].set_index("video_id")["pairs"] if flow is not None and len(flow) else pd.Series(dtype="int64")
    table = entries.assign(
        class_name=pd.Series(classes, dtype=object).take(entries["label"].to_numpy()).to_numpy(),
        frames=entries["video_id"].map(done),
        flow_pairs=entries["video_id"].map(pairs).fillna(0),
    )
    present = table["frames"].notna() & (table["frames"] > 0)
    missing = table.loc[~present, ["subset", "video_id"]]
    missing = missing.assign(reason=np.where(isin(missing["video_id"], failed), "frames failed", "not extracted"))
    table = table[present].astype({"frames": "int64", "flow_pairs": "int64"})
    columns = COLUMNS + (["labels"] if "labels" in table.columns else [])  # multi-label: every label, `;`-joined
    pick = lambda subset: table.loc[table["subset"] == subset, columns].reset_index(drop=True)  # noqa: E731
    return Split(source, number, list(classes), pick("train"), pick("test"), missing.reset_index(drop=True), params or {})


def listable(video_id: str) -> bool:
    """Whether a video id fits the whitespace-separated `path count label` lists (no space, tab or newline)."""
    return WHITESPACE.search(video_id) is None


def listable_ids(video_ids: pd.Series) -> pd.Series:
    """`listable` of every id at once (pyarrow's RE2 over the column; the class is str.isspace's characters)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spaced = pc.match_substring_regex(pa.array(video_ids, type=pa.large_string()), r"[\t-\r\x1c-\x1f\x85\pZ]")
    return pd.Series(~spaced.to_numpy(zero_copy_only=False), index=video_ids.index)


def unlisted(split: Split) -> pd.DataFrame:
    """Videos of the split whose names hold whitespace: kept in train.csv/test.csv (which quote them) but left
    out of the `path count label` lists, which mmaction2 and tsn-pytorch split on whitespace."""
    rows = [(subset, video_id, f"name holds whitespace: left out of {subset}_rgb.txt and {subset}_flow.txt")
            for subset, table in (("train", split.train), ("test", split.test))
            for video_id in table["video_id"][~listable_ids(table["video_id"]).to_numpy()]]
    return pd.DataFrame(rows, columns=["subset", "video_id", "reason"])


def _list_file(table: pd.DataFrame, folder: str, count: str, root: str | None, fits: pd.Series) -> bytes:
    """The `<frame dir> <count> <label>` list read by mmaction2 and tsn-pytorch; flow lists skip videos without
    flow, and every list skips names with whitespace (see `unlisted`)."""
    if root and not listable(root):
        raise TsnpipeError(f"--list-root {root!r} holds whitespace, which the `path count label` lists cannot hold; "
                           "give a path without spaces (e.g. a symlink to the workdir).")
    prefix = f"{root.rstrip('/')}/{folder}" if root else folder
    rows = table[(table[count] > 0).to_numpy() & fits.to_numpy()]
    labels = rows["labels"].str.replace(";", " ") if "labels" in rows.columns else rows["label"].astype(str)  # multi-label lists
    lines = prefix + "/" + rows["video_id"] + " " + rows[count].astype(str) + " " + labels + "\n"
    return "".join(lines.tolist()).encode()


def escape_field(column: pd.Series) -> pd.Series:
    """A tab-separated line's field: backslash, tab, newline and carriage return written as \\\\, \\t, \\n, \\r, so
    a name holding them stays on its own line (`escapes.unescape` reads it back)."""
    for char, escaped in ESCAPES.items():
        column = column.str.replace(char, escaped, regex=False)
    return column


def missing_lines(table: pd.DataFrame) -> str:
    """`subset<TAB>video id<TAB>reason` per row, names escaped (see `escape_field`)."""
    return "".join((table["subset"].astype(str) + "\t" + escape_field(table["video_id"].astype(str)) + "\t"
                    + table["reason"].astype(str) + "\n").tolist())


def split_files(split: Split, list_root: str | None = None) -> dict[str, bytes]:
    """The files of one split folder, as bytes. List paths are relative to the workdir unless `list_root` is given."""
    files = {
        "classes.txt": "".join(f"{name}\n" for name in split.classes).encode(),
        "train.csv": split.train.to_csv(index=False, lineterminator="\n").encode(),
        "test.csv": split.test.to_csv(index=False, lineterminator="\n").encode(),
        "missing.txt": (missing_lines(split.missing) + missing_lines(unlisted(split))).encode(),
        "params.json": (json.dumps({"source": split.source, "split": split.number, **split.params}, indent=1, sort_keys=True) + "\n").encode(),
    }
    for subset, table in (("train", split.train), ("test", split.test)):
        fits = listable_ids(table["video_id"])
        files[f"{subset}_rgb.txt"] = _list_file(table, "frames", "frames", list_root, fits)
        files[f"{subset}_flow.txt"] = _list_file(table, "flow", "flow_pairs", list_root, fits)
    return files


def write_split_files(out_dir: str | os.PathLike, files: dict[str, bytes], remove: tuple[str, ...] = ()) -> Path:
    """Write the files of one split into `out_dir` so that they change together or not at all: every file is
    first written (and synced) to a temp file beside it; only when all are written are they renamed into place
    and the files named in `remove` (a stale val.csv) deleted. A full disk therefore leaves the older split whole,
    never a new classes.txt beside an old train.csv, and no temp file behind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps = {name: out_dir / f".{name}.tmp" for name in files}
    try:
        for name, data in sorted(files.items()):
            with open(temps[name], "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for name in sorted(files):  # renames take no space: once every temp is written, these do not fail on a full disk
        os.replace(temps[name], out_dir / name)
    for name in remove:
        (out_dir / name).unlink(missing_ok=True)
    return out_dir


def split_dir(workdir: str | os.PathLike, source: str, number: int) -> Path:
    """`W/splits/<source>/split<N>`."""
    return Path(workdir) / "splits" / source / f"split{number}"
