"""What a run leaves beside its checkpoints: metrics.csv, one row per epoch (curves.png is drawn from it by `tsnpipe.stages.scores.report.plot_curves`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_mean_class", "clips_per_s", "seconds",
    "val_list",
)
# Text columns; the others are numbers. val_list: the list the val_* columns (and so best.pt) were measured on,
# val.csv, or test.csv where build-splits wrote no validation list.
TEXT_COLUMNS = ("val_list",)


def read_metrics(path: Path) -> list[dict]:
    """The rows of an existing metrics.csv as dicts of floats (epoch as int); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: value if key in TEXT_COLUMNS else int(value) if key == "epoch" else float(value)
             for key, value in row.items() if value is not None} for row in rows]


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically with all rows so far."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: row.get(key, "") for key in METRIC_COLUMNS})
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
