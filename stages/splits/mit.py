"""Moments in Time (v1, as published by MIT-IBM and read by mmaction2's `parse_mit_splits`):
`moments_categories.txt` has `<class>,<id>` lines (ids 0..338), `trainingSet.csv` and `validationSet.csv`
have `<class>/<file>.mp4,<class>,<agreement>,<disagreement>` rows. The class comes from the path's folder,
as mmaction2 takes it; the label is the id the categories file gives it. The video id is the path
without its extension (`bouncing/giphy-abc`), matched to the extracted ids by trailing path components,
so a VIDEO_DIR holding `training/` and `validation/` works as it is. The validation list is the test
list; there is one split.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.annotations import classes_in_id_order, csv_rows, label_index
from tsnpipe.stages.splits.tables import check_disjoint, entries_table
from tsnpipe.stages.splits.text import check_class_names, class_id

FILES = {"labels": "moments_categories.txt", "train": "trainingSet.csv", "test": "validationSet.csv"}
WHAT = "the Moments in Time annotations: " + ", ".join(FILES.values())


def mit_classes(path: Path) -> list[str]:
    """Class names in id order from `<class>,<id>` lines; ids must be 0..N-1, once each."""
    by_id: dict[int, str] = {}
    line_of: dict[int, int] = {}
    for line, fields in csv_rows(path, WHAT):
        index = class_id(fields[1]) if len(fields) == 2 and fields[0] else None
        if index is None:
            raise TsnpipeError(f"{path} line {line}: expected `<class>,<id>` with an id of at most 6 digits; "
                               f"use the published {FILES['labels']}.")
        if index in by_id:
            raise TsnpipeError(f"{path} line {line}: id {fields[1]} is given twice; use the published {FILES['labels']}.")
        by_id[index], line_of[index] = fields[0], line
    classes = classes_in_id_order(by_id, path, FILES["labels"])
    return check_class_names(classes, path, [line_of[i] for i in range(len(classes))])


def read_mit(annotation_dir: str | os.PathLike) -> tuple[list[str], pd.DataFrame]:
    """Classes (categories file ids) and entries of Moments in Time."""
    annotation_dir = Path(annotation_dir)
    label_file = annotation_dir / FILES["labels"]
    classes = mit_classes(label_file)
    label_of = {name: i for i, name in enumerate(classes)}
    rows = []
    for subset in ("train", "test"):
        path = annotation_dir / FILES[subset]
        for line, fields in csv_rows(path, WHAT):
            listed = fields[0]
            if "/" not in listed:
                raise TsnpipeError(f"{path} line {line}: {listed!r} is not `<class>/<file>`; replace it with the published file ({WHAT}).")
            folder = listed.rsplit("/", 1)[0]
            video = listed.rsplit(".", 1)[0] if "." in listed.rsplit("/", 1)[1] else listed
            rows.append((video, subset, label_index(label_of, folder, path, line, label_file)))
    return classes, check_disjoint(entries_table(rows), annotation_dir)
