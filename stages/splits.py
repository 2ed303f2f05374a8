"""Train/test splits from the official UCF101 and HMDB51 lists, or from a folder of class folders.

Each source becomes one table of entries (video_id, subset, label) plus the class list; `build_split`
joins it with the frames (and flow) manifest so every listed video gets its frame and flow-pair counts,
and videos the lists name but that were not extracted (or failed) are listed as missing, not fatal.
`split_files` renders the files of `W/splits/<source>/split<N>/` as bytes: the same input always
gives byte-identical files.

Labels are 0-based. UCF101: the order of classInd.txt (1-based in the file). HMDB51: class names sorted
(as torchvision and mmaction2 do), unless a class list file is given; Caffe TSN's `class_list.txt` puts
`kick_ball` before `kick`, so its label ids differ from the sorted ones. Folders: class folder names sorted.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError

SOURCES = ("ucf101", "hmdb51", "folders")
SPLIT_NUMBERS = (1, 2, 3)
DEFAULT_GROUP_REGEX = r"_g(\d+)_"  # UCF101's group: clips gNN of one class are cut from one long video
COLUMNS = ["video_id", "label", "class_name", "frames", "flow_pairs"]
HMDB51_CODES = {"1": "train", "2": "test"}  # 0: not used in this split


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


def _lines(path: Path) -> list[str]:
    """Non-empty lines without their CRLF/LF ends and surrounding spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TsnpipeError(f"{path} does not exist; point at the folder holding the official split files.") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _entries(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["video_id", "subset", "label"]).astype({"label": "int64"})


def read_ucf101(split_dir: str | os.PathLike, number: int) -> tuple[list[str], pd.DataFrame]:
    """Classes (classInd order) and entries of UCF101 split `number`; the video id is the listed path
    without `.avi`, spelling kept (`HandstandPushups/v_HandStandPushups_g01_c01`)."""
    split_dir = Path(split_dir)
    classes = []
    for line in _lines(split_dir / "classInd.txt"):
        index, name = line.split()
        if int(index) != len(classes) + 1:
            raise TsnpipeError(f"{split_dir / 'classInd.txt'} numbers class {name!r} as {index}, expected {len(classes) + 1}; use the official file.")
        classes.append(name)
    label_of = {name: i for i, name in enumerate(classes)}
    rows = []
    for subset, file_name in (("train", f"trainlist0{number}.txt"), ("test", f"testlist0{number}.txt")):
        for line in _lines(split_dir / file_name):
            parts = line.split()
            video_id = parts[0].rsplit(".", 1)[0]
            class_name = video_id.split("/")[0]
            if class_name not in label_of:
                raise TsnpipeError(f"{split_dir / file_name} lists {parts[0]} whose class {class_name!r} is not in classInd.txt; use the matching official files.")
            if len(parts) > 1 and int(parts[1]) != label_of[class_name] + 1:
                raise TsnpipeError(f"{split_dir / file_name} gives {parts[0]} label {parts[1]}, but classInd.txt says {label_of[class_name] + 1}; use the matching official files.")
            rows.append((video_id, subset, label_of[class_name]))
    return classes, _check_disjoint(_entries(rows), split_dir)


def read_hmdb51(split_dir: str | os.PathLike, number: int, class_list: str | os.PathLike | None = None) -> tuple[list[str], pd.DataFrame]:
    """Classes and entries of HMDB51 split `number` from `<class>_test_split<N>.txt` (1 train, 2 test, 0 unused).

    Classes are sorted by name unless `class_list` (one name per line, e.g. Caffe TSN's class_list.txt) is given."""
    split_dir = Path(split_dir)
    suffix = f"_test_split{number}.txt"
    files = {p.name[: -len(suffix)]: p for p in split_dir.glob(f"*{suffix}")}
    if not files:
        raise TsnpipeError(f"{split_dir} holds no *{suffix} files; point --hmdb51 at the folder of the official testTrainMulti_7030_splits.")
    classes = sorted(files) if class_list is None else _lines(Path(class_list))
    if sorted(classes) != sorted(files):
        raise TsnpipeError(f"The class list {class_list} does not name the same classes as the split files in {split_dir}; use the list that came with them.")
    rows = []
    for label, class_name in enumerate(classes):
        for line in _lines(files[class_name]):
            name, code = line.split()
            if code in HMDB51_CODES:
                rows.append((f"{class_name}/{name.rsplit('.', 1)[0]}", HMDB51_CODES[code], label))
    return classes, _check_disjoint(_entries(rows), split_dir)


def _check_disjoint(entries: pd.DataFrame, where: Path) -> pd.DataFrame:
    twice = entries[entries.duplicated("video_id", keep=False)]
    if len(twice):
        raise TsnpipeError(f"The split files in {where} list {twice.video_id.iloc[0]} more than once; fix or replace those files.")
    return entries


def group_of(video_id: str, pattern: re.Pattern) -> str:
    """The clip group a video belongs to: the regex's first group (or whole match) in the file name;
    a name without a match is a group of its own."""
    name = video_id.rsplit("/", 1)[-1]
    match = pattern.search(name)
    if match is None:
        return name
    return match.group(1) if pattern.groups else match.group(0)


def _assign(groups: dict[str, int], ratio: float, rng: random.Random) -> dict[str, str]:
    """Shuffled groups (name -> clip count) go to train until it holds `ratio` of the clips; with two or
    more groups, at least one stays for test."""
    order = sorted(groups)
    rng.shuffle(order)
    target, taken, side = ratio * sum(groups.values()), 0, {}
    for i, group in enumerate(order):
        keep_one_for_test = len(order) > 1 and i == len(order) - 1
        side[group] = "train" if taken < target and not keep_one_for_test else "test"
        taken += groups[group] if side[group] == "train" else 0
    return side


def folder_entries(video_ids: Iterable[str], number: int = 1, ratio: float = 0.7, seed: int = 0,
                   group_regex: str = DEFAULT_GROUP_REGEX, scope: str = "class") -> tuple[list[str], pd.DataFrame]:
    """Classes (sorted class folders) and a seeded train/test split that keeps each group on one side.

    scope "class": per class, the groups are shuffled (seeded by seed, split number and class) and go to
    train until the train side holds `ratio` of the class's clips; near-duplicate clips share their class
    (UCF101's gNN). scope "all": a group name means the same source in every class (e.g. re-timed or
    re-cropped copies of one clip filed under several classes), so each group goes to one side in all
    classes at once."""
    if not 0.0 < ratio < 1.0:
        raise TsnpipeError(f"--ratio {ratio} is not between 0 and 1; give the train fraction, e.g. 0.7.")
    try:
        pattern = re.compile(group_regex)
    except re.error as error:
        raise TsnpipeError(f"--group-regex {group_regex!r} is not a valid regular expression ({error}); fix it.") from None
    by_class: dict[str, dict[str, list[str]]] = {}
    for video_id in sorted(set(video_ids)):
        if "/" not in video_id:
            raise TsnpipeError(f"Video {video_id!r} is not inside a class folder; put each video under <class>/ in the video folder.")
        by_class.setdefault(video_id.split("/")[0], {}).setdefault(group_of(video_id, pattern), []).append(video_id)
    classes = sorted(by_class)
    if scope == "all":
        sizes: dict[str, int] = {}
        for clips in by_class.values():
            for group, members in clips.items():
                sizes[group] = sizes.get(group, 0) + len(members)
        shared = _assign(sizes, ratio, random.Random(f"{seed}/{number}"))
    rows = []
    for label, class_name in enumerate(classes):
        clips = by_class[class_name]
        side = shared if scope == "all" else _assign({g: len(v) for g, v in clips.items()}, ratio,
                                                     random.Random(f"{seed}/{number}/{class_name}"))
        for group in sorted(clips):
            rows.extend((video_id, side[group], label) for video_id in clips[group])
    return classes, _entries(rows).sort_values("video_id", kind="stable").reset_index(drop=True)


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
    return not any(ch.isspace() for ch in video_id)


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
