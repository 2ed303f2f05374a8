"""Train and test lists in mmaction2's formats (`build-splits --list TRAIN --list-test TEST [--classes FILE]`).

mmaction2's `tools/data/<dataset>/` scripts (and many people's own annotation) write one clip a line:
- video lists: `<video path> <label>`, e.g. `abseiling/abc_000010_000020.mp4 0`;
- frame lists: `<frame dir> <frame count> <label>`, e.g. `abseiling/abc_000010_000020 300 0`.
Labels are 0-based class ids. A file's format is read from its first line: a path with a video extension
makes a video list. Paths are relative to the video folder (mmaction2's `data_prefix`), or absolute below
it, and resolve to video ids as `extract-frames` names them (the path below the folder, without the
extension); a path that names no extracted video matches the one extracted video of its file name, if there
is exactly one. The frame count of a frame list is not used: the frames here are tsnpipe's own.

Class names: one a line in FILE (e.g. mmaction2's `label_map_k400.txt`), line i naming label i; without
it the classes are named by their ids. Multi-label lines (`path label label ...`), one clip twice with two labels or in both lists (a line
repeated in one list is kept once), a label
beyond the classes and a path outside the video folder are errors naming the file and line.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path, PurePosixPath

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.frames import VIDEO_SUFFIXES
from tsnpipe.stages.splits.kinetics import check_unique, drop_repeats, file_names
from tsnpipe.stages.splits.tables import isin
from tsnpipe.stages.splits.text import MAX_CLASSES, bounded_text, check_class_names


def _lines(path: Path) -> pd.DataFrame:
    """(line number, fields) of each non-empty line."""
    text = bounded_text(path, "a list of `<video path> <label>` or `<frame dir> <count> <label>` lines")
    rows = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise TsnpipeError(f"{path} lists no clips; give a list of `<video path> <label>` or "
                           "`<frame dir> <count> <label>` lines.")
    return pd.DataFrame(rows, columns=["line", "fields"])


def is_video_path(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in VIDEO_SUFFIXES


def video_id(path: str, video_root: Path | None) -> str | None:
    """The id extract-frames gives the video at `path` (relative to the video folder, or absolute below it);
    None when the path leads outside the folder."""
    if os.path.isabs(path):
        if video_root is None:
            return None
        try:
            path = Path(path).relative_to(video_root).as_posix()
        except ValueError:
            return None
    path = posixpath.normpath(path.replace("\\", "/"))
    if path.startswith("../") or path in ("..", "."):
        return None
    return path[: -len(PurePosixPath(path).suffix)] if is_video_path(path) else path


def read_list(path: str | os.PathLike, subset: str, video_root: Path | None) -> pd.DataFrame:
    """One list as (video_id, subset, label, file, line)."""
    path = Path(path)
    lines = _lines(path)
    video_format = is_video_path(lines["fields"].iloc[0][0])
    width = 2 if video_format else 3
    example = "`<video path> <label>`" if video_format else "`<frame dir> <count> <label>`"
    counts = lines["fields"].str.len()
    if (counts != width).any():
        line, fields = lines[counts != width].iloc[0]
        if len(fields) > width:
            raise TsnpipeError(f"{path} line {line}: {' '.join(fields)!r} holds {len(fields) - width + 1} labels, and "
                               f"tsnpipe trains single-label classifiers; keep one label a line ({example}).")
        raise TsnpipeError(f"{path} line {line}: {' '.join(fields)!r} is not {example}; fix that line "
                           "(a path holding spaces cannot be listed).")
    paths, labels = lines["fields"].str[0], lines["fields"].str[-1]
    numeric = labels.str.fullmatch(r"[0-9]{1,6}")
    numeric &= pd.to_numeric(labels.where(numeric, "0")) < MAX_CLASSES
    if not numeric.all():
        line, fields = lines[~numeric].iloc[0]
        raise TsnpipeError(f"{path} line {line}: the label {fields[-1][:40]!r} is not a class id (0 to "
                           f"{MAX_CLASSES - 1:,}); give 0-based ids and the names with --classes FILE.")
    ids = pd.Series([video_id(p, video_root) for p in paths], dtype=object)
    if ids.isna().any():
        line, fields = lines[ids.isna()].iloc[0]
        where = f"the video folder {video_root}" if video_root else "the video folder"
        raise TsnpipeError(f"{path} line {line}: {fields[0]} is outside {where}; give paths relative to it "
                           "(as mmaction2's data_prefix) or absolute paths below it.")
    return pd.DataFrame({"video_id": ids, "subset": subset, "label": labels.astype("int64"),
                         "file": str(path), "line": lines["line"]})


def read_lists(train: str | os.PathLike, test: str | os.PathLike, classes_file: str | os.PathLike | None,
               video_root: Path | None) -> tuple[list[str], pd.DataFrame]:
    """(classes, listed clips) of a train and a test list."""
    listed = pd.concat([read_list(train, "train", video_root), read_list(test, "test", video_root)], ignore_index=True)
    listed, _ = drop_repeats(listed, "video_id")
    check_unique(listed, "video_id")
    if classes_file is not None:
        text = bounded_text(Path(classes_file), "class names, one a line")
        named = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        classes = check_class_names([name for _, name in named], Path(classes_file), [n for n, _ in named])
    else:
        classes = [str(i) for i in range(int(listed["label"].max()) + 1)]
    beyond = listed["label"] >= len(classes)
    if beyond.any():
        row = listed[beyond].iloc[0]
        raise TsnpipeError(f"{row.file} line {row.line}: label {row.label} is beyond the {len(classes)} classes of "
                           f"{classes_file} (ids 0 to {len(classes) - 1}); give the class file these lists were made with.")
    return classes, listed


def match_listed(listed: pd.DataFrame, frames: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(entries: video_id, subset, label; count of extracted videos that no list names).

    A listed path that names no extracted video is matched by its file name when exactly one extracted video
    has that name: mmaction2's Kinetics lists use class folders (`abseiling/<clip>.mp4`), the CVDF mirror
    flat `train/` and `val/` folders."""
    listed = listed.reset_index(drop=True)
    exact = isin(listed["video_id"], frames["video_id"])
    if not exact.all():
        names = file_names(frames["video_id"])
        unique = ~names.duplicated(keep=False).to_numpy()
        by_name = pd.Series(frames["video_id"].to_numpy()[unique], index=names.to_numpy()[unique])
        found = file_names(listed.loc[~exact, "video_id"]).map(by_name)
        found = found[found.notna()]
        listed.loc[found.index, "video_id"] = found.to_numpy()
        check_unique(listed, "video_id")  # two paths may name one video by its file name
    unlisted = int((~isin(frames["video_id"], listed["video_id"])).sum())
    return listed[["video_id", "subset", "label"]], unlisted
