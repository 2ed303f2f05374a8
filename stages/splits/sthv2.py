"""Something-Something V2 and V1 as published by TwentyBN (Qualcomm), read as mmaction2's
`tools/data/parse_file_list.py` (`parse_sthv2_splits`, `parse_sthv1_splits`) reads them.

V2 (`--sthv2 DIR`): `something-something-v2-labels.json` maps each template to its label id
(`{"Approaching something with your camera": "0", ...}`); `something-something-v2-train.json` and
`something-something-v2-validation.json` are lists of `{"id": "78687", "label": "...", "template":
"Holding [something] next to [something]", "placeholders": [...]}`: the class is the template with its
brackets removed. V1 (`--sthv1 DIR`): `something-something-v1-labels.csv` (one class a line; line i is
label i-1) and `something-something-v1-train.csv` / `-validation.csv` (`<id>;<class>` lines). The video id
is the `id` (V2's `<id>.webm`, V1's frame folder `<id>`). The validation list is the test list (the test
lists carry no labels), as in mmaction2; there is one split.

Left and right: a mirrored "Pushing something from left to right" is "Pushing something from right to
left". `mirror_pairs` pairs the classes whose names differ only by left <-> right: pulling, pushing and
turning the camera, which mmaction2's `sthv2_flip_label_map` {86: 87, 93: 94, 166: 167} pairs by id in the
V2 label file (the names are matched, so a label file in another order still pairs them right). The split's params.json records them with `flip: swap-labels`, which training and
test read (`tsnpipe.stages.train.flip`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.annotations import (classes_in_id_order, csv_rows, entry_field, entry_id, json_document,
                                               json_entries, label_index)
from tsnpipe.stages.splits.text import check_class_names, class_id
from tsnpipe.stages.splits.tables import check_disjoint, entries_table

V2_FILES = {"labels": "something-something-v2-labels.json", "train": "something-something-v2-train.json",
            "test": "something-something-v2-validation.json"}
V1_FILES = {"labels": "something-something-v1-labels.csv", "train": "something-something-v1-train.csv",
            "test": "something-something-v1-validation.csv"}
V2_WHAT = "the Something-Something V2 labels/ folder: " + ", ".join(V2_FILES.values())
V1_WHAT = "the Something-Something V1 annotations: " + ", ".join(V1_FILES.values())
MMACTION2_STHV2_FLIP = {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}  # mmaction2 tsn sthv2 configs


def v2_classes(path: Path) -> list[str]:
    """Class names in label order from the labels JSON (`{name: "id"}`); ids must be 0..N-1, once each."""
    document = json_document(path, V2_WHAT)
    if not isinstance(document, dict) or not document:
        raise TsnpipeError(f"{path} is not a JSON object of class name -> id; use the published {V2_FILES['labels']}.")
    by_id: dict[int, str] = {}
    for name, value in document.items():
        index = class_id(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        if index is None:
            raise TsnpipeError(f"{path}: class {name!r} has id {value!r}, not a number; use the published {V2_FILES['labels']}.") from None
        if index in by_id:
            raise TsnpipeError(f"{path}: classes {by_id[index]!r} and {name!r} share id {index}; use the published {V2_FILES['labels']}.")
        by_id[index] = name
    return check_class_names(classes_in_id_order(by_id, path, V2_FILES["labels"]), path)


def read_sthv2(annotation_dir: str | os.PathLike) -> tuple[list[str], pd.DataFrame]:
    """Classes (label file order) and entries of Something-Something V2 (train; validation as test)."""
    annotation_dir = Path(annotation_dir)
    label_file = annotation_dir / V2_FILES["labels"]
    classes = v2_classes(label_file)
    label_of = {name: i for i, name in enumerate(classes)}
    rows = []
    for subset in ("train", "test"):
        path = annotation_dir / V2_FILES[subset]
        for line, entry in json_entries(path, V2_WHAT):
            video = entry_id(entry, "id", path, line, V2_WHAT)
            template = entry_field(entry, "template", path, line, V2_WHAT)
            if not isinstance(template, str) or not template.strip():
                raise TsnpipeError(f"{path} line {line}: the entry's template is empty; replace it with the published file ({V2_WHAT}).")
            name = template.replace("[", "").replace("]", "")
            rows.append((video, subset, label_index(label_of, name, path, line, label_file)))
    return classes, check_disjoint(entries_table(rows), annotation_dir)


def read_sthv1(annotation_dir: str | os.PathLike) -> tuple[list[str], pd.DataFrame]:
    """Classes (label file order) and entries of Something-Something V1 (train; validation as test)."""
    annotation_dir = Path(annotation_dir)
    label_file = annotation_dir / V1_FILES["labels"]
    named = list(csv_rows(label_file, V1_WHAT, delimiter="\t"))
    classes = check_class_names([fields[0] for _, fields in named], label_file, [line for line, _ in named])
    label_of = {name: i for i, name in enumerate(classes)}
    rows = []
    for subset in ("train", "test"):
        path = annotation_dir / V1_FILES[subset]
        for line, fields in csv_rows(path, V1_WHAT, delimiter=";"):
            if len(fields) != 2 or not fields[0] or not fields[1]:
                raise TsnpipeError(f"{path} line {line}: expected `<id>;<class>`; replace it with the published file ({V1_WHAT}).")
            rows.append((fields[0], subset, label_index(label_of, fields[1], path, line, label_file)))
    return classes, check_disjoint(entries_table(rows), annotation_dir)


def mirrored(name: str) -> str:
    """The class name with the words left and right swapped (case kept)."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return re.sub(r"\b(left|right|Left|Right)\b", lambda m: swap[m.group(0)], name)


def mirror_pairs(classes: list[str]) -> list[list[int]]:
    """[[a, b], ...] (a < b): classes whose names differ only by left <-> right, each pair once."""
    label_of = {name: i for i, name in enumerate(classes)}
    pairs = []
    for i, name in enumerate(classes):
        j = label_of.get(mirrored(name))
        if j is not None and j > i:
            pairs.append([i, j])
    return pairs
