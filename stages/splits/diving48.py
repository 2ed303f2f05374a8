"""Diving48 (V2 annotations, as mmaction2's `tools/data/diving48` downloads them): `Diving48_vocab.json`
lists the 48 classes, each as its four stages (`["Back", "15som", "05Twis", "FREE"]`), and
`Diving48_V2_train.json` / `Diving48_V2_test.json` are lists of `{"vid_name": "_8Vy3dlHg2w_00000", "label":
0, "start_frame": 0, "end_frame": 84}`. Label i is line i of the vocabulary (mmaction2 and the dataset's
own order); the class name joins the four stages with `+` (`Back+15som+05Twis+FREE`), as mmaction2's
`tools/data/diving48/label_map.txt` names them. The video id is `vid_name` (the published
`<vid_name>.mp4`). One split: train and test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.annotations import entry_field, entry_id, json_document, json_entries
from tsnpipe.stages.splits.text import check_class_names
from tsnpipe.stages.splits.tables import check_disjoint, entries_table

FILES = {"labels": "Diving48_vocab.json", "train": "Diving48_V2_train.json", "test": "Diving48_V2_test.json"}
WHAT = "the Diving48 annotations: " + ", ".join(FILES.values())


def diving48_classes(path: Path) -> list[str]:
    document = json_document(path, WHAT)
    if not isinstance(document, list) or not document:
        raise TsnpipeError(f"{path} is not a JSON list of classes; use the published {FILES['labels']}.")
    classes = []
    for i, stages in enumerate(document):
        parts = stages if isinstance(stages, list) else [stages]
        if not parts or not all(isinstance(p, str) and p.strip() for p in parts):
            raise TsnpipeError(f"{path}: class {i} is not a list of stage names; use the published {FILES['labels']}.")
        classes.append("+".join(p.strip().replace(" ", "_") for p in parts))
    return check_class_names(classes, path)


def read_diving48(annotation_dir: str | os.PathLike) -> tuple[list[str], pd.DataFrame]:
    """Classes (vocabulary order) and entries of Diving48 V2."""
    annotation_dir = Path(annotation_dir)
    label_file = annotation_dir / FILES["labels"]
    classes = diving48_classes(label_file)
    rows = []
    for subset in ("train", "test"):
        path = annotation_dir / FILES[subset]
        for line, entry in json_entries(path, WHAT):
            video = entry_id(entry, "vid_name", path, line, WHAT)
            label = entry_field(entry, "label", path, line, WHAT)
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(classes):
                raise TsnpipeError(f"{path} line {line}: label {label!r} is not a class of {label_file} (0..{len(classes) - 1}); "
                                   "use the annotation and vocabulary files of one release.")
            rows.append((video, subset, label))
    return classes, check_disjoint(entries_table(rows), annotation_dir)
