"""Multi-Moments in Time: several labels per video, read as mmaction2's `parse_mmit_splits` reads them.
`moments_categories.txt` has `<class>,<id>` lines; `trainingSet.csv` and `validationSet.csv` have
`<class>/<file>.mp4,<id>,<id>,...` rows (every label of the video, at least one). The video id is the
path without its extension; `label` holds the first label and `labels` all of them, `;`-joined, in
train.csv/test.csv (the `path count l1 l2 ...` lists carry them all). The validation list is the test
list; there is one split.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.annotations import csv_rows
from tsnpipe.stages.splits.mit import mit_classes
from tsnpipe.stages.splits.tables import check_disjoint, entries_table
from tsnpipe.stages.splits.text import class_id

FILES = {"labels": "moments_categories.txt", "train": "trainingSet.csv", "test": "validationSet.csv"}
WHAT = "the Multi-Moments in Time annotations: " + ", ".join(FILES.values())


def read_mmit(annotation_dir: str | os.PathLike) -> tuple[list[str], pd.DataFrame]:
    """Classes (categories file ids) and multi-label entries (video_id, subset, label, labels)."""
    annotation_dir = Path(annotation_dir)
    label_file = annotation_dir / FILES["labels"]
    classes = mit_classes(label_file)
    rows, label_lists = [], []
    for subset in ("train", "test"):
        path = annotation_dir / FILES[subset]
        for line, fields in csv_rows(path, WHAT):
            listed, given = fields[0], [f for f in fields[1:] if f]
            if not listed or not given:
                raise TsnpipeError(f"{path} line {line}: {listed or 'the row'} has no labels; every row needs "
                                   f"`<path>,<id>[,<id>...]`; replace it with the published file ({WHAT}).")
            labels = []
            for field in given:
                label = class_id(field)
                if label is None or label >= len(classes):
                    raise TsnpipeError(f"{path} line {line}: label {field[:80]!r} is not a class id of {label_file} "
                                       f"(0..{len(classes) - 1}); use the annotation and label files of one release.")
                labels.append(label)
            name = listed.rsplit("/", 1)[-1]
            video = listed.rsplit(".", 1)[0] if "." in name else listed
            rows.append((video, subset, labels[0]))
            label_lists.append(";".join(map(str, dict.fromkeys(labels))))
    entries = entries_table(rows).assign(labels=label_lists)
    return classes, check_disjoint(entries, annotation_dir)
