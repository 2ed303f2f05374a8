"""`build-splits` options for the published data sets read by `tsnpipe.stages.splits.published`
(Something-Something V1/V2, Diving48, Moments in Time): one folder of annotation files each."""

from __future__ import annotations

from pathlib import Path

import click

PUBLISHED_OPTIONS = (
    ("sthv2", "Folder with something-something-v2-labels.json, -train.json and -validation.json (Something-Something V2; "
              "validation is the test list; flip swaps the left/right classes)."),
    ("sthv1", "Folder with something-something-v1-labels.csv, -train.csv and -validation.csv (`id;class` lines; "
              "Something-Something V1; validation is the test list; flip swaps the left/right classes)."),
    ("diving48", "Folder with Diving48_vocab.json, Diving48_V2_train.json and Diving48_V2_test.json (Diving48 V2)."),
    ("mit", "Folder with moments_categories.txt, trainingSet.csv and validationSet.csv (Moments in Time; "
            "validation is the test list)."),
    ("mmit", "Folder with moments_categories.txt, trainingSet.csv and validationSet.csv (Multi-Moments in Time: "
             "`path,id,id,...` rows, several labels a video; train with --multi-label)."),
    ("hvu", "Folder with hvu_categories.csv, hvu_train.csv and hvu_val.csv (HVU; the tags of --hvu-category, "
            "several a video; the published HVU_*_V1.0.csv names work too)."),
)
HVU_CATEGORIES = ("action", "attribute", "concept", "event", "object", "scene")  # stages.splits.hvu.CATEGORIES


def published_options(command):
    """Add --sthv2, --sthv1, --diving48, --mit, --mmit and --hvu DIR (keyword arguments `<name>_dir`) and
    --hvu-category."""
    command = click.option("--hvu-category", type=click.Choice(HVU_CATEGORIES), default="action", show_default=True,
                           help="--hvu: the tag category to split (mmaction2 trains one model per category).")(command)
    for name, help_text in reversed(PUBLISHED_OPTIONS):
        command = click.option(f"--{name}", f"{name}_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
                               default=None, help=help_text)(command)
    return command
