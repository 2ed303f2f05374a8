"""What a run leaves beside its checkpoints: metrics.csv (one row per epoch) and curves.png."""

from __future__ import annotations

import csv
import os
from pathlib import Path

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_mean_class", "clips_per_s", "seconds",
)


def read_metrics(path: Path) -> list[dict]:
    """The rows of an existing metrics.csv as dicts of floats (epoch as int); [] when there is none."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()} for row in rows]


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Rewrite metrics.csv atomically with all rows so far."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row[key] for key in METRIC_COLUMNS})
    os.replace(temp, path)


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Loss and accuracy per epoch, train and validation, as a PNG (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    figure = Figure(figsize=(10, 4))
    loss, accuracy = figure.subplots(1, 2)
    loss.plot(epochs, [row["train_loss"] for row in rows], marker="o", label="train")
    loss.plot(epochs, [row["val_loss"] for row in rows], marker="o", label="validation")
    loss.set_xlabel("epoch")
    loss.set_ylabel("cross-entropy loss")
    loss.legend()
    accuracy.plot(epochs, [row["train_top1"] for row in rows], marker="o", label="train top-1")
    accuracy.plot(epochs, [row["val_top1"] for row in rows], marker="o", label="validation top-1")
    accuracy.plot(epochs, [row["val_mean_class"] for row in rows], marker="o", label="validation mean class")
    accuracy.set_xlabel("epoch")
    accuracy.set_ylabel("accuracy")
    accuracy.set_ylim(0, 1)
    accuracy.legend()
    figure.tight_layout()
    temp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temp, dpi=80)
    os.replace(temp, path)
