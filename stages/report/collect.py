"""What the report reads from a work folder besides the manifests: runs, score files, split lists, features.

Everything is bounded so a folder of 240,000 videos reads in seconds: split lists by their class column only,
a few split folders, one HDF5 file per feature set for its shapes, and the score files as they are (one row a
test video). The manifests themselves are read by the caller, column by column, and handed in as tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

MAX_SPLITS = 3  # split folders shown (UCF101's three official ones)
LISTS = ("train", "val", "test")


@dataclass
class Run:
    name: str
    metrics: pd.DataFrame | None
    scores: Path | None  # W/scores/<name>.pkl, the run's test scores, when tested
    validation: Path | None  # W/scores/validation/<name>.pkl


@dataclass
class StageTable:
    """One stage's manifest columns and the record of its last run."""

    name: str
    rows: pd.DataFrame
    run_params: dict = field(default_factory=dict)
    params_hash: str | None = None


def runs(workdir: Path) -> list[Run]:
    """Every W/runs/<name>/ with a metrics.csv or a score file, by name."""
    found = []
    for folder in sorted(p for p in (workdir / "runs").glob("*") if p.is_dir()):
        metrics_csv = folder / "metrics.csv"
        metrics = None
        if metrics_csv.is_file():
            try:
                metrics = pd.read_csv(metrics_csv)
            except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                metrics = None
        scores = workdir / "scores" / f"{folder.name}.pkl"
        validation = workdir / "scores" / "validation" / f"{folder.name}.pkl"
        found.append(Run(folder.name, metrics, scores if scores.is_file() else None,
                         validation if validation.is_file() else None))
    return found


def split_lists(workdir: Path) -> dict[str, dict[str, pd.Series]]:
    """{"ucf101/split1": {"train": class names, "test": ...}} of the first few split folders."""
    found = {}
    for folder in sorted((workdir / "splits").glob("*/split*"))[:MAX_SPLITS]:
        lists = {}
        for name in LISTS:
            path = folder / f"{name}.csv"
            if path.is_file():
                try:
                    lists[name] = pd.read_csv(path, usecols=["class_name"])["class_name"].astype(str)
                except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                    continue
        if lists:
            found[f"{folder.parent.name}/{folder.name}"] = lists
    return found


def feature_shapes(folder: Path, video_id: str) -> dict[str, tuple]:
    """Dataset name -> shape in one video's features.h5 (or its .npy files)."""
    h5 = folder / video_id / "features.h5"
    if h5.is_file():
        import h5py

        try:
            with h5py.File(h5, "r") as handle:
                return {name: tuple(handle[name].shape) for name in handle if isinstance(handle[name], h5py.Dataset)}
        except OSError:
            return {}
    return {p.stem: tuple(np.load(p, mmap_mode="r").shape) for p in sorted((folder / video_id).glob("*.npy"))}


def most_confused(matrix: np.ndarray, class_names: list[str], count: int = 10) -> list[tuple[str, str, int, float]]:
    """The largest off-diagonal cells: (true class, predicted as, videos, share of the true class's videos)."""
    wrong = matrix.copy()
    np.fill_diagonal(wrong, 0)
    flat = np.argsort(wrong, axis=None, kind="stable")[::-1][:count]
    totals = matrix.sum(axis=1)
    pairs = []
    for index in flat:
        true, predicted = np.unravel_index(index, matrix.shape)
        if wrong[true, predicted] == 0:
            break
        pairs.append((class_names[true], class_names[predicted], int(wrong[true, predicted]),
                      float(wrong[true, predicted] / max(totals[true], 1))))
    return pairs
