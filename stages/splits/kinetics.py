"""Kinetics-400/600/700 from the official annotation CSVs (`build-splits --kinetics DIR`).

The CSVs (DeepMind's, mirrored by CVDF) have the columns `label,youtube_id,time_start,time_end,split`
(Kinetics-700-2020 adds `is_cc`): `train.csv`, `validate.csv`, and `test.csv` (labelled in some releases
only). A clip is the 10 s cut `<youtube_id>_<time_start:06d>_<time_end:06d>` of a YouTube video, the
file name every downloader and the CVDF mirror use, so it is matched against the extracted videos by
file name whatever the folder (the mirror's flat `train/`, `val/`, or class folders) and extension.

- train: `train.csv`; test: `validate.csv` (`val.csv` in the CVDF listing), the "val" on which every reference (mmaction2's zoo,
  PaddleVideo's TSN) reports its Kinetics top-1. `test.csv` (labelled in some releases) is read and
  checked, and its clips count as listed, but it does not enter the split (no reference reports on it).
- Class ids: the class names sorted, which is the order of mmaction2's `label_map_k400.txt`.
- Version: 400, 600 or 700 from the number of classes, unless given (a subset of the classes).

Everything is a column operation over the whole table: 240,000 clips take well under a second.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.tables import isin
from tsnpipe.stages.splits.text import bounded_text, check_class_names

VERSIONS = (400, 600, 700)
COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
FILES = (("train", ("train.csv",)), ("test", ("validate.csv", "val.csv")), ("heldout", ("test.csv",)))  # CVDF: val.csv
MAX_SECONDS = 1_000_000  # the clip's name writes each time in 6 digits


def clip_ids(youtube_id: pd.Series, start: pd.Series, end: pd.Series) -> pd.Series:
    """`<youtube_id>_<time_start:06d>_<time_end:06d>`, the name of the clip's video file."""
    padded = lambda seconds: np.char.zfill(seconds.to_numpy().astype(str), 6)  # noqa: E731  (numpy's loop is C)
    return youtube_id + "_" + pd.Series(padded(start), index=start.index) + "_" + pd.Series(padded(end), index=end.index)


def _seconds(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    """A time column as whole seconds below MAX_SECONDS; a value that is not one is an error naming its line."""
    if pd.api.types.is_integer_dtype(table[column]) and ((table[column] >= 0) & (table[column] < MAX_SECONDS)).all():
        return table[column].astype("int64")  # the C parser read every value as an integer
    values = pd.to_numeric(table[column], errors="coerce").astype("float64")
    finite = np.isfinite(values.to_numpy())
    bad = ~finite | (values < 0).to_numpy() | (values >= MAX_SECONDS).to_numpy() | (values != values.round()).to_numpy()
    if bad.any():
        line = int(table.index[bad.argmax()]) + 2
        raise TsnpipeError(f"{path} line {line}: {column} {str(table[column][bad].iloc[0])[:40]!r} is not a whole number "
                           f"of seconds from 0 to {MAX_SECONDS - 1:,} (6 digits in the clip's name); fix that line or "
                           "use the official Kinetics CSVs.")
    return values.astype("int64")


def read_csv(path: Path, subset: str) -> pd.DataFrame:
    """One annotation CSV as (clip, label name, subset, file, line); an unlabelled test.csv has no label names."""
    text = bounded_text(path, "the official Kinetics CSVs")
    try:
        table = pd.read_csv(io.StringIO(text), dtype={c: str for c in ("label", "youtube_id", "split", "is_cc")},
                            keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, ValueError) as error:
        raise TsnpipeError(f"{path} is not a readable CSV ({str(error).strip()}); use the official Kinetics CSVs.") from None
    except pd.errors.EmptyDataError:
        raise TsnpipeError(f"{path} line 1: the file is empty; it needs the header {','.join(COLUMNS)}.") from None
    table.columns = [str(c).strip() for c in table.columns]
    if subset == "heldout" and "label" not in table.columns:  # the test set of most releases comes without labels
        table["label"] = None
    lacking = [c for c in COLUMNS if c not in table.columns]
    if lacking:
        raise TsnpipeError(f"{path} line 1: the header {','.join(table.columns)} lacks {','.join(lacking)}; the "
                           f"official Kinetics CSVs have {','.join(COLUMNS)}[,is_cc]: fix the header or use those files.")
    empty = (table["label"] == "") | (table["youtube_id"] == "")
    if empty.any():
        line = int(table.index[empty.to_numpy().argmax()]) + 2
        raise TsnpipeError(f"{path} line {line}: the label or youtube_id is empty; fix or delete that line.")
    if table.empty and subset != "heldout":
        raise TsnpipeError(f"{path} lists no clips (only its header); use the official Kinetics CSVs.")
    clips = clip_ids(table["youtube_id"], _seconds(table, "time_start", path), _seconds(table, "time_end", path))
    return pd.DataFrame({"clip": clips, "class_name": table["label"], "subset": subset, "file": str(path),
                         "line": table.index.to_numpy() + 2})


def drop_repeats(listed: pd.DataFrame, what: str = "clip") -> tuple[pd.DataFrame, int]:
    """(listed without repeated lines, how many were dropped): a clip listed again in the same list with the same
    label is kept once. mmaction2 keeps both lines (the clip then trains twice an epoch and counts twice in
    the accuracy); here a video is one row of train.csv/test.csv, which scores and features are keyed by."""
    label = listed["class_name"] if "class_name" in listed.columns else listed["label"]
    repeat = pd.DataFrame({"key": listed[what], "subset": listed["subset"], "label": label.astype(str)}).duplicated()
    return listed[~repeat.to_numpy()].reset_index(drop=True), int(repeat.sum())


def check_unique(listed: pd.DataFrame, what: str = "clip") -> None:
    """The same clip twice (with two labels, or in two lists) is an error naming both lines."""
    twice = listed.duplicated(what, keep=False)
    if twice.any():
        first = listed[twice].sort_values(what, kind="stable").iloc[:2]  # in reading order: train, then test
        (a, b) = first.itertuples(index=False)
        again = (a.file, a.line) == (b.file, b.line)  # one file given as two lists
        raise TsnpipeError(f"{b.file} line {b.line} lists {getattr(b, what)}, already listed at {a.file} line {a.line}"
                           f"{f' (as the {a.subset} list)' if again else ''}; delete one of the two lines (a clip "
                           "belongs to one list, with one label).")


def kinetics_version(classes: list[str], given: int | None, where: Path) -> int:
    """400, 600 or 700: the one given, else the one the class count names."""
    if given is not None:
        if len(classes) in VERSIONS and len(classes) != given:
            raise TsnpipeError(f"The CSVs in {where} name {len(classes)} classes, which is Kinetics-{len(classes)}, not "
                               f"--kinetics-version {given}; drop --kinetics-version or point at the Kinetics-{given} CSVs.")
        return given
    if len(classes) not in VERSIONS:
        raise TsnpipeError(f"The CSVs in {where} name {len(classes)} classes, not 400, 600 or 700; say which Kinetics "
                           "they come from with --kinetics-version 400, 600 or 700.")
    return len(classes)


def read_kinetics(csv_dir: str | os.PathLike, version: int | None = None) -> tuple[int, list[str], pd.DataFrame]:
    """(version, classes, listed clips): one row per clip of train.csv, validate.csv and test.csv, with columns
    clip, class_name (None in an unlabelled test.csv), subset (train, test, heldout), file, line, label."""
    csv_dir = Path(csv_dir)
    tables = []
    for subset, names in FILES:
        path = next((csv_dir / name for name in names if (csv_dir / name).is_file()), None)
        if path is None:
            if subset == "heldout":
                continue
            raise TsnpipeError(f"{csv_dir} has no {' or '.join(names)}; point --kinetics at the folder of the official "
                               "annotation CSVs (train.csv, validate.csv or val.csv, test.csv).")
        tables.append(read_csv(path, subset))
    listed, _ = drop_repeats(pd.concat(tables, ignore_index=True))
    check_unique(listed)
    train = listed[listed["subset"] == "train"]
    classes = check_class_names(sorted(train["class_name"].unique().tolist()), csv_dir / "train.csv")
    labels = listed["class_name"].map(pd.Series(range(len(classes)), index=classes, dtype="int64"))
    unknown = labels.isna() & listed["class_name"].notna()
    if unknown.any():
        row = listed[unknown].iloc[0]
        raise TsnpipeError(f"{row.file} line {row.line}: label {row.class_name!r} is not a class of train.csv; "
                           "fix the label or use the CSVs of one Kinetics release.")
    listed["label"] = labels.fillna(-1).astype("int64").to_numpy()  # -1: unlabelled (test.csv)
    return kinetics_version(classes, version, csv_dir), classes, listed


def file_names(video_ids: pd.Series) -> pd.Series:
    """Each video id's last part (its file name without the extension): `train/abc_000010_000020` -> `abc_000010_000020`."""
    return pd.Series(video_ids, dtype="str").str.replace(r"^.*/", "", regex=True)


def match_extracted(listed: pd.DataFrame, frames: pd.DataFrame, key: str = "clip") -> tuple[pd.DataFrame, int]:
    """(entries: video_id, subset, label for the train and test clips, video_id being the extracted video's id, or
    the clip itself when nothing of that name was extracted; count of extracted videos no list names).

    Matching is by file name: a video extracted twice under two folders counts once, a done one first."""
    extracted = pd.DataFrame({"video_id": frames["video_id"], key: file_names(frames["video_id"]),
                              "failed": frames["status"] != "done"})
    extracted = extracted.sort_values("failed", kind="stable").drop_duplicates(key)  # frames come sorted by id
    unlisted = int((~isin(extracted[key], listed[key])).sum())
    used = listed[(listed["subset"] == "train") | (listed["subset"] == "test")]
    merged = used[[key, "subset", "label"]].merge(extracted[[key, "video_id"]], on=key, how="left", sort=False)
    merged["video_id"] = merged["video_id"].fillna(merged[key])
    return merged[["video_id", "subset", "label"]].reset_index(drop=True), unlisted
