"""HVU (Holistic Video Understanding) tags of one category, read as mmaction2's `tools/data/hvu` reads them.

`hvu_categories.csv` (published as `HVU_Tags_Categories_V1.0.csv`: a header, then `tag,category` rows) gives
each tag's category; a category's classes are its tags sorted by name (mmaction2 `parse_tag_list.py`).
`hvu_train.csv` and `hvu_val.csv` (`HVU_Train_V1.0.csv`, `HVU_Val_V1.0.csv`: a header, then
`tags,youtube_id,time_start,time_end` rows, tags joined by `|`) list the clips; the video id is
`<youtube_id>_<start x 10, 6 digits>_<end x 10, 6 digits>` (mmaction2 `generate_file_list.py`). Each clip
carries every tag of the chosen category it has (several labels); clips with none of that category's
tags are not in that category's split, as in mmaction2's `generate_sub_file_list.py`. The validation list
is the test list; there is one split per category (mmaction2 trains one model per category).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.annotations import csv_rows
from tsnpipe.stages.splits.tables import check_disjoint, entries_table
from tsnpipe.stages.splits.text import check_class_names

CATEGORIES = ("action", "attribute", "concept", "event", "object", "scene")
FILES = {"labels": ("hvu_categories.csv", "HVU_Tags_Categories_V1.0.csv"), "train": ("hvu_train.csv", "HVU_Train_V1.0.csv"),
         "test": ("hvu_val.csv", "HVU_Val_V1.0.csv")}
WHAT = "the HVU annotations: hvu_categories.csv, hvu_train.csv, hvu_val.csv (or their HVU_*_V1.0.csv names)"


def find(annotation_dir: Path, kind: str) -> Path:
    for name in FILES[kind]:
        if (annotation_dir / name).is_file():
            return annotation_dir / name
    raise TsnpipeError(f"{annotation_dir} holds neither {' nor '.join(FILES[kind])}; point --hvu at {WHAT}.")


def tag_categories(path: Path) -> dict[str, str]:
    """tag -> category, from the rows after the header."""
    found = {}
    for line, fields in csv_rows(path, WHAT):
        if line == 1:
            continue
        if len(fields) != 2 or not fields[0] or fields[1] not in CATEGORIES:
            raise TsnpipeError(f"{path} line {line}: expected `<tag>,<category>` with a category of "
                               f"{', '.join(CATEGORIES)}; use the published file ({WHAT}).")
        found[fields[0]] = fields[1]
    return found


MAX_SECONDS = 100_000  # the clip name holds tenths of a second in 6 digits


def clip_id(youtube_id: str, start: str, end: str) -> str:
    """`<youtube_id>_<start x 10:06d>_<end x 10:06d>`; a time that is not a number of seconds from 0 to
    MAX_SECONDS (`inf`, `nan`, `-1`, `1e30`) is a ValueError."""
    tenths = []
    for text in (start, end):
        seconds = float(text)
        if not 0 <= seconds < MAX_SECONDS:  # also false for nan
            raise ValueError(text)
        tenths.append(int(seconds * 10))
    return f"{youtube_id}_{tenths[0]:06d}_{tenths[1]:06d}"


def read_hvu(annotation_dir: str | os.PathLike, category: str) -> tuple[list[str], pd.DataFrame]:
    """Classes (the category's tags, sorted) and multi-label entries (video_id, subset, label, labels)."""
    if category not in CATEGORIES:
        raise TsnpipeError(f"--hvu-category {category!r} is not an HVU category; use one of {', '.join(CATEGORIES)}.")
    annotation_dir = Path(annotation_dir)
    categories_file = find(annotation_dir, "labels")
    tag_category = tag_categories(categories_file)
    classes = sorted(tag for tag, cat in tag_category.items() if cat == category)
    if not classes:
        raise TsnpipeError(f"{categories_file} has no tag of category {category!r}; choose another --hvu-category "
                           f"or use the published file ({WHAT}).")
    check_class_names(classes, categories_file)
    label_of = {tag: i for i, tag in enumerate(classes)}
    rows, label_lists = [], []
    for subset in ("train", "test"):
        path = find(annotation_dir, subset)
        for line, fields in csv_rows(path, WHAT):
            if line == 1:
                continue
            if len(fields) != 4:
                raise TsnpipeError(f"{path} line {line}: expected `tags,youtube_id,time_start,time_end`; "
                                   f"replace it with the published file ({WHAT}).")
            tags = [tag for tag in fields[0].split("|") if tag]
            if not tags:
                raise TsnpipeError(f"{path} line {line}: the clip has no tags; replace it with the published file ({WHAT}).")
            unknown = [tag for tag in tags if tag not in tag_category]
            if unknown:
                raise TsnpipeError(f"{path} line {line}: tag {unknown[0]!r} is not in {categories_file}; "
                                   "use the annotation and category files of one release.")
            labels = sorted({label_of[tag] for tag in tags if tag in label_of})
            if not labels:
                continue  # no tag of this category: not in this category's split
            try:
                video = clip_id(fields[1], fields[2], fields[3])
            except ValueError:
                raise TsnpipeError(f"{path} line {line}: time_start/time_end {fields[2][:40]!r}/{fields[3][:40]!r} are not "
                                   f"numbers of seconds from 0 to {MAX_SECONDS:,}; "
                                   f"replace it with the published file ({WHAT}).") from None
            rows.append((video, subset, labels[0]))
            label_lists.append(";".join(map(str, labels)))
    return classes, check_disjoint(entries_table(rows).assign(labels=label_lists), annotation_dir)
