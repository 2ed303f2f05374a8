"""UCF101's official splits: classInd.txt (1-based ids, in the file's order) and trainlistNN.txt /
testlistNN.txt under the folder given."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.tables import check_disjoint, entries_table, read_lines
from tsnpipe.stages.splits.text import class_id


def read_ucf101(split_dir: str | os.PathLike, number: int) -> tuple[list[str], pd.DataFrame]:
    """Classes (classInd order) and entries of UCF101 split `number`; the video id is the listed path
    without `.avi`, spelling kept (`HandstandPushups/v_HandStandPushups_g01_c01`)."""
    split_dir = Path(split_dir)
    classes = []
    for line in read_lines(split_dir / "classInd.txt"):
        fields = line.split()
        if len(fields) != 2 or class_id(fields[0]) is None:
            raise TsnpipeError(f"{split_dir / 'classInd.txt'} has the line {line[:80]!r}, not `<id> <class>`; use the official file.")
        index, name = fields
        if int(index) != len(classes) + 1:
            raise TsnpipeError(f"{split_dir / 'classInd.txt'} numbers class {name!r} as {index}, expected {len(classes) + 1}; use the official file.")
        classes.append(name)
    label_of = {name: i for i, name in enumerate(classes)}
    rows = []
    for subset, file_name in (("train", f"trainlist0{number}.txt"), ("test", f"testlist0{number}.txt")):
        for line in read_lines(split_dir / file_name):
            parts = line.split()
            video_id = parts[0].rsplit(".", 1)[0]
            class_name = video_id.split("/")[0]
            if class_name not in label_of:
                raise TsnpipeError(f"{split_dir / file_name} lists {parts[0]} whose class {class_name!r} is not in classInd.txt; use the matching official files.")
            if len(parts) > 1 and (class_id(parts[1]) is None or int(parts[1]) != label_of[class_name] + 1):
                raise TsnpipeError(f"{split_dir / file_name} gives {parts[0]} label {parts[1]}, but classInd.txt says {label_of[class_name] + 1}; use the matching official files.")
            rows.append((video_id, subset, label_of[class_name]))
    return classes, check_disjoint(entries_table(rows), split_dir)
