"""What a run leaves beside its checkpoints: metrics.csv, one row per epoch (curves.png is drawn from it by `tsnpipe.stages.scores.report.plot_curves`)."""

from __future__ import annotations

import csv
import os
import re
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


# the temps of a run's own files: .best.pt.tmp, .last.pt.tmp, .metrics.csv.tmp, .curves.png.<random>.tmp
RUN_TEMP = re.compile(r"\.(best\.pt|last\.pt|metrics\.csv)\.tmp|\.curves\.png\.[A-Za-z0-9_]+\.tmp")


def sweep_run_temps(run_dir: Path) -> int:
    """Remove the temps a killed run (SIGKILL, a power cut) left in its folder; the caller holds the run's lock.
    Returns how many were removed."""
    removed = 0
    try:
        with os.scandir(run_dir) as entries:
            names = [entry.name for entry in entries if RUN_TEMP.fullmatch(entry.name)]
    except FileNotFoundError:
        return 0
    for name in names:
        Path(run_dir, name).unlink(missing_ok=True)
        removed += 1
    return removed
