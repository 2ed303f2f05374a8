"""The published data sets with one train/test split and their own annotation formats: which reader, what
params.json records (the annotation folder, and for Something-Something the flip rule and its pairs)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

from tsnpipe.stages.splits.annotations import with_extracted_ids

PUBLISHED = ("sthv2", "sthv1", "diving48", "mit", "mmit", "hvu")


def read_published(source: str, annotation_dir: str | os.PathLike, extracted: Iterable[str],
                   hvu_category: str = "action") -> tuple[list[str], pd.DataFrame, dict]:
    """(classes, entries with extracted video ids, params) of one published data set (HVU: the tags of one category)."""
    params: dict = {"split_dir": str(annotation_dir)}
    if source in ("sthv2", "sthv1"):
        from tsnpipe.stages.splits.sthv2 import mirror_pairs, read_sthv1, read_sthv2

        classes, entries = (read_sthv2 if source == "sthv2" else read_sthv1)(annotation_dir)
        params.update(flip="swap-labels", flip_pairs=mirror_pairs(classes))
    elif source == "diving48":
        from tsnpipe.stages.splits.diving48 import read_diving48

        classes, entries = read_diving48(annotation_dir)
    elif source == "mit":
        from tsnpipe.stages.splits.mit import read_mit

        classes, entries = read_mit(annotation_dir)
    elif source == "mmit":
        from tsnpipe.stages.splits.mmit import read_mmit

        classes, entries = read_mmit(annotation_dir)
        params["multi_label"] = True
    elif source == "hvu":
        from tsnpipe.stages.splits.hvu import read_hvu

        classes, entries = read_hvu(annotation_dir, hvu_category)
        params.update(multi_label=True, hvu_category=hvu_category)
    else:
        raise ValueError(f"unknown published source {source!r}")
    return classes, with_extracted_ids(entries, extracted), params
