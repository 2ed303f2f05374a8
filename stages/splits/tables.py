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

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError

SOURCES = ("ucf101", "hmdb51", "folders")
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TsnpipeError(f"{path} does not exist; point at the folder holding the official split files.") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def entries_table(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "subset", "label"]).astype({"label": "int64"})


def check_disjoint(entries: pd.DataFrame, where: Path) -> pd.DataFrame:
    twice = entries[entries.duplicated("video_id", keep=False)]
    if len(twice):
        raise TsnpipeError(f"The split files in {where} list {twice.video_id.iloc[0]} more than once; fix or replace those files.")
    return entries


def build_split(source: str, number: int, classes: list[str], entries: pd.DataFrame, frames: pd.DataFrame,
                flow: pd.DataFrame | None = None, params: dict | None = None) -> Split:
    """Join entries with the frames (and flow) manifest: counts for done videos, the rest listed as missing."""
    done = frames[frames["status"] == "done"].set_index("video_id")["frames"]
    failed = set(frames.loc[frames["status"] != "done", "video_id"])
    pairs = flow[flow["status"] == "done"].set_index("video_id")["pairs"] if flow is not None and len(flow) else pd.Series(dtype="int64")
    table = entries.assign(
        class_name=[classes[i] for i in entries["label"]],
        frames=entries["video_id"].map(done),
        flow_pairs=entries["video_id"].map(pairs).fillna(0),
    )
    present = table["frames"].notna() & (table["frames"] > 0)
    missing = table.loc[~present, ["subset", "video_id"]].assign(
        reason=["frames failed" if v in failed else "not extracted" for v in table.loc[~present, "video_id"]]
    )
    table = table[present].astype({"frames": "int64", "flow_pairs": "int64"})
    pick = lambda subset: table.loc[table["subset"] == subset, COLUMNS].reset_index(drop=True)  # noqa: E731
    return Split(source, number, list(classes), pick("train"), pick("test"), missing.reset_index(drop=True), params or {})


def listable(video_id: str) -> bool:
    """Whether a video id fits the whitespace-separated `path count label` lists (no space, tab or newline)."""
    return WHITESPACE.search(video_id) is None


def unlisted(split: Split) -> pd.DataFrame:
    """Videos of the split whose names hold whitespace: kept in train.csv/test.csv (which quote them) but left
    out of the `path count label` lists, which mmaction2 and tsn-pytorch split on whitespace."""
    rows = [(subset, video_id, f"name holds whitespace: left out of {subset}_rgb.txt and {subset}_flow.txt")
            for subset, table in (("train", split.train), ("test", split.test))
            for video_id in table["video_id"] if not listable(video_id)]
    return pd.DataFrame(rows, columns=["subset", "video_id", "reason"])


def _list_file(table: pd.DataFrame, folder: str, count: str, root: str | None) -> bytes:
    """The `<frame dir> <count> <label>` list read by mmaction2 and tsn-pytorch; flow lists skip videos without
    flow, and every list skips names with whitespace (see `unlisted`)."""
    if root and not listable(root):
        raise TsnpipeError(f"--list-root {root!r} holds whitespace, which the `path count label` lists cannot hold; "
                           "give a path without spaces (e.g. a symlink to the workdir).")
    prefix = f"{root.rstrip('/')}/{folder}" if root else folder
    rows = table[(table[count] > 0) & table["video_id"].map(listable).astype(bool)]
    return "".join(f"{prefix}/{v} {n} {label}\n" for v, n, label in zip(rows["video_id"], rows[count], rows["label"])).encode()


def split_files(split: Split, list_root: str | None = None) -> dict[str, bytes]:
    """The files of one split folder, as bytes. List paths are relative to the workdir unless `list_root` is given."""
    files = {
        "classes.txt": "".join(f"{name}\n" for name in split.classes).encode(),
        "train.csv": split.train.to_csv(index=False, lineterminator="\n").encode(),
        "test.csv": split.test.to_csv(index=False, lineterminator="\n").encode(),
        "missing.txt": "".join(f"{s}\t{v}\t{r}\n" for table in (split.missing, unlisted(split))
                               for s, v, r in table.itertuples(index=False)).encode(),
        "params.json": (json.dumps({"source": split.source, "split": split.number, **split.params}, indent=1, sort_keys=True) + "\n").encode(),
    }
    for subset, table in (("train", split.train), ("test", split.test)):
        files[f"{subset}_rgb.txt"] = _list_file(table, "frames", "frames", list_root)
        files[f"{subset}_flow.txt"] = _list_file(table, "flow", "flow_pairs", list_root)
    return files


def write_split_files(out_dir: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write each file atomically (temp file, then rename) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        tmp = out_dir / f".{name}.tmp"
        try:
            tmp.write_bytes(data)
            os.replace(tmp, out_dir / name)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves the older file, never a temp beside it
            raise
    return out_dir


def split_dir(workdir: str | os.PathLike, source: str, number: int) -> Path:
    """`W/splits/<source>/split<N>`."""
    return Path(workdir) / "splits" / source / f"split{number}"
