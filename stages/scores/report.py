"""Reports on a score file (confusion matrix, per-class accuracy) and on a training run (curves).

Plots use matplotlib's object API (`Figure`, Agg canvas) rather than pyplot, so no display and no global
figure state are involved; files are written to a temp name and renamed into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.scores.outputs import replace_atomically
from tsnpipe.stages.scores.files import accuracies, read_scores

CELL_TEXT_MAX_CLASSES = 30  # above this, numbers in the cells are unreadable
NAMED_AXES_MAX_CLASSES = 60  # above this, the axes show class indices instead of names
# What plot_curves needs, and the spellings it accepts for each.
CURVE_COLUMNS = {
    "epoch": ("epoch",),
    "train_loss": ("train_loss",),
    "train_acc": ("train_acc", "train_top1"),
    "val_mean_class": ("val_mean_class_acc", "val_mean_class"),
}


@dataclass
class Report:
    """The files `write_report` wrote and the accuracies it measured."""

    confusion_png: Path | None  # None for a multi-label score file (no single true class to confuse)
    per_class_csv: Path
    accuracies: dict[str, float]
    videos: int
    classes: int


def confusion_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts [true class, predicted class] of the top-1 predictions."""
    num_classes = scores.shape[1]
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, scores.argmax(axis=1)), 1)
    return matrix


def per_class_table(matrix: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """One row per class: videos, correct, accuracy, and the class it is most often mistaken for."""
    videos = matrix.sum(axis=1)
    correct = np.diag(matrix)
    wrong = matrix - np.diag(correct)
    confused = wrong.argmax(axis=1)
    confused_count = wrong[np.arange(len(matrix)), confused]
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(videos > 0, correct / np.maximum(videos, 1), np.nan)
    return pd.DataFrame({
        "class_index": np.arange(len(matrix)),
        "class_name": class_names,
        "videos": videos,
        "correct": correct,
        "accuracy": accuracy,
        "most_confused_with": [class_names[c] if n else "" for c, n in zip(confused, confused_count)],
        "confused_videos": confused_count,
    })


def write_report(scores_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Report:
    """Write <stem>_confusion.png and <stem>_per_class.csv for a score file (next to it by default)."""
    scores_path = Path(scores_path)
    content = read_scores(scores_path)
    out_dir = Path(out_dir) if out_dir is not None else scores_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    scores, labels, class_names = content["scores"], content["labels"], content["class_names"]
    if content.get("targets") is not None:
        return write_multi_label_report(scores_path, content, out_dir)
    matrix = confusion_matrix(scores, labels)
    result = accuracies(scores, labels)
    modality = content["aggregation"].get("modality", "")
    title = (f"{scores_path.name} {modality}: top-1 {100 * result['top1']:.2f}%, "
             f"mean class {100 * result['mean_class']:.2f}% ({len(labels)} videos)")
    png = out_dir / f"{scores_path.stem}_confusion.png"
    csv = out_dir / f"{scores_path.stem}_per_class.csv"
    plot_confusion(matrix, class_names, png, title)
    replace_atomically(csv, lambda temp: per_class_table(matrix, class_names).to_csv(temp, index=False))
    return Report(confusion_png=png, per_class_csv=csv, accuracies=result, videos=len(labels),
                  classes=len(class_names))


def write_multi_label_report(scores_path: Path, content: dict, out_dir: Path) -> Report:
    """<stem>_per_class_ap.csv for a multi-label score file: each class's positive videos and average precision."""
    from tsnpipe.stages.scores.average_precision import per_class_average_precision
    from tsnpipe.stages.scores.files import metrics

    scores, targets, class_names = content["scores"], content["targets"], content["class_names"]
    table = pd.DataFrame({"class_index": np.arange(len(class_names)), "class_name": class_names,
                          "positives": targets.sum(axis=0).astype(np.int64),
                          "average_precision": per_class_average_precision(scores, targets)})
    csv = out_dir / f"{scores_path.stem}_per_class_ap.csv"
    replace_atomically(csv, lambda temp: table.to_csv(temp, index=False))
    return Report(confusion_png=None, per_class_csv=csv, accuracies=metrics(scores, content["labels"], targets,
                                                                     content["aggregation"].get("map_over", "classes")),
                  videos=len(scores), classes=len(class_names))


def plot_confusion(matrix: np.ndarray, class_names: list[str], png: str | os.PathLike, title: str = "") -> None:
    """Write the confusion matrix figure as a PNG."""
    figure = confusion_figure(matrix, class_names, title)
    replace_atomically(Path(png), lambda temp: figure.savefig(temp, format="png", dpi=100))


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = ""):
    """Row-normalised confusion matrix (each row is a true class; colour is the share of its videos).

    Counts are written in the cells only up to 30 classes, and class names label the axes up to 60;
    beyond that (UCF101's 101 classes) every 10th class index is marked instead.
    """
    from matplotlib.figure import Figure

    num_classes = len(class_names)
    videos = matrix.sum(axis=1, keepdims=True)
    shares = matrix / np.maximum(videos, 1)
    side = float(np.clip(3 + 0.22 * num_classes, 6, 16))
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.02, label="share of the true class's videos")
    if num_classes <= NAMED_AXES_MAX_CLASSES:
        ticks, tick_labels = np.arange(num_classes), class_names
    else:
        ticks = np.arange(0, num_classes, 10)
        tick_labels = [str(t) for t in ticks]
    font = 7 if CELL_TEXT_MAX_CLASSES < num_classes <= NAMED_AXES_MAX_CLASSES else 9
    axes.set_xticks(ticks, tick_labels, rotation=90, fontsize=font)
    axes.set_yticks(ticks, tick_labels, fontsize=font)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=10)
    if num_classes <= CELL_TEXT_MAX_CLASSES:
        for true, predicted in zip(*np.nonzero(matrix)):
            colour = "white" if shares[true, predicted] > 0.5 else "black"
            axes.text(predicted, true, str(matrix[true, predicted]), ha="center", va="center", fontsize=7,
                      color=colour)
    return figure


def plot_curves(metrics_csv: str | os.PathLike, png: str | os.PathLike) -> None:
    """Loss and accuracy curves of a training run from its metrics.csv (one row per epoch).

    Needs epoch, train_loss, a train accuracy (train_acc or train_top1) and the validation mean class
    accuracy (val_mean_class_acc or val_mean_class, as `tsnpipe train` writes it); val_loss and val_top1
    are drawn when present. Empty validation cells (epochs not evaluated) are skipped, not drawn as gaps.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    metrics_csv = Path(metrics_csv)
    try:
        metrics = pd.read_csv(metrics_csv)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise TsnpipeError(
            f"Cannot read the training metrics {metrics_csv} ({error}); check the run folder."
        ) from error
    columns = {need: next((c for c in spellings if c in metrics.columns), None)
               for need, spellings in CURVE_COLUMNS.items()}
    missing = [" or ".join(CURVE_COLUMNS[need]) for need, column in columns.items() if column is None]
    if missing:
        raise TsnpipeError(
            f"{metrics_csv} lacks the columns {', '.join(missing)}; plot a metrics.csv written by tsnpipe train."
        )
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    lines = [
        (loss_axes, columns["train_loss"], "train", "."), (loss_axes, "val_loss", "validation", "o"),
        (accuracy_axes, columns["train_acc"], "train top-1", "."),
        (accuracy_axes, "val_top1", "validation top-1", "o"),
        (accuracy_axes, columns["val_mean_class"], "validation mean class", "o"),
    ]
    for axes, column, label, marker in lines:
        if column in metrics.columns:
            drawn = metrics.dropna(subset=[column])
            axes.plot(drawn[columns["epoch"]], drawn[column], marker=marker, label=label)
    loss_axes.set_ylabel("loss")
    accuracy_axes.set_ylabel("accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.legend()
    figure.suptitle(str(metrics_csv.parent.name or metrics_csv.name))
    replace_atomically(Path(png), lambda temp: figure.savefig(temp, format="png", dpi=100))

