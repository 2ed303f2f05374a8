"""HMDB51's official splits: one `<class>_test_splitN.txt` per class, codes 1 (train), 2 (test), 0 (unused).

Class ids: class names sorted (as torchvision and mmaction2 do), unless a class list file is given; Caffe
TSN's `class_list.txt` puts `kick_ball` before `kick`, so its label ids differ from the sorted ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.tables import check_disjoint, entries_table, read_lines

HMDB51_CODES = {"1": "train", "2": "test"}  # 0: not used in this split


def read_hmdb51(split_dir: str | os.PathLike, number: int, class_list: str | os.PathLike | None = None) -> tuple[list[str], pd.DataFrame]:
    """Classes and entries of HMDB51 split `number` from `<class>_test_split<N>.txt` (1 train, 2 test, 0 unused).

    Classes are sorted by name unless `class_list` (one name per line, e.g. Caffe TSN's class_list.txt) is given."""
    split_dir = Path(split_dir)
    suffix = f"_test_split{number}.txt"
    files = {p.name[: -len(suffix)]: p for p in split_dir.glob(f"*{suffix}")}
    if not files:
        raise TsnpipeError(f"{split_dir} holds no *{suffix} files; point --hmdb51 at the folder of the official testTrainMulti_7030_splits.")
    classes = sorted(files) if class_list is None else read_lines(Path(class_list))
    if sorted(classes) != sorted(files):
        raise TsnpipeError(f"The class list {class_list} does not name the same classes as the split files in {split_dir}; use the list that came with them.")
    rows = []
    for label, class_name in enumerate(classes):
        for line in read_lines(files[class_name]):
            fields = line.split()
            if len(fields) != 2:
                raise TsnpipeError(f"{files[class_name]} has the line {line[:80]!r}, not `<video> <0|1|2>`; "
                                   "use the official testTrainMulti_7030_splits files.")
            name, code = fields
            if code in HMDB51_CODES:
                rows.append((f"{class_name}/{name.rsplit('.', 1)[0]}", HMDB51_CODES[code], label))
    return classes, check_disjoint(entries_table(rows), split_dir)
