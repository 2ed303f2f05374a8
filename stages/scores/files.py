"""Score files: the class scores `tsnpipe test` writes and `tsnpipe fuse` / `tsnpipe report` read.

A score file is a pickle of one plain dict (see `write_scores`). Pickle is used because the reference
tools exchange scores that way, but a pickle can carry code, and a score file is often data from
someone else, so `read_scores` unpickles with an allow-list: builtin containers and scalars, and the
few numpy globals that rebuild arrays, dtypes and numpy scalars. Anything else is refused before it
runs.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.scores.outputs import replace_atomically

try:
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray, numeric as _numeric

FORMAT = "tsnpipe-scores"
VERSION = 1
KEYS = ("format", "version", "video_ids", "labels", "class_names", "scores", "aggregation", "source")

# The globals numpy 2.x pickles reference (protocols 3-5), plus their numpy 1.x spellings
# (numpy.core.*) so files written with an older numpy still load.
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
}


class ScoreFileError(TsnpipeError):
    """A score file that cannot be read, is not a tsnpipe score file, or is unsafe to load."""


class ClassOrderError(TsnpipeError):
    """Two things that must name the same classes in the same label order do not."""


CLASS_EXAMPLES = 3  # how many differing labels a class-order error names


def class_difference(first: list[str], second: list[str]) -> str | None:
    """None when the two class lists are equal, else a phrase naming the first labels that differ."""
    first, second = [str(name) for name in first], [str(name) for name in second]
    if first == second:
        return None
    differ = [i for i in range(max(len(first), len(second)))
              if i >= len(first) or i >= len(second) or first[i] != second[i]]

    def name(names: list[str], i: int) -> str:
        return repr(names[i]) if i < len(names) else "missing"

    shown = "; ".join(f"label {i} is {name(first, i)} vs {name(second, i)}" for i in differ[:CLASS_EXAMPLES])
    sizes = f"{len(first)} vs {len(second)} classes, " if len(first) != len(second) else ""
    count = f"{len(differ)} labels differ, first" if len(differ) > 1 else "1 label differs:"
    return f"{sizes}{count} {shown}"


def check_class_order(first: list[str], second: list[str], first_name: str, second_name: str, fix: str) -> None:
    """Refuse two class lists that differ in names or order, in one sentence naming the first labels that differ.

    Scores are only comparable label by label: the same classes in another order (HMDB51 split lists built
    with and without a class list, a folder split after a class was added) silently give wrong results.
    """
    difference = class_difference(first, second)
    if difference is not None:
        raise ClassOrderError(f"{first_name} and {second_name} do not list the same classes in the same order "
                              f"({difference}); {fix}.")


def check_split_classes(checkpoint_classes: list[str], split_classes: list[str], checkpoint, split_dir) -> None:
    """Refuse to score a split whose classes.txt orders the classes unlike the checkpoint's training split."""
    check_class_order(
        checkpoint_classes, split_classes, f"The checkpoint {checkpoint}", f"{Path(split_dir) / 'classes.txt'}",
        "rebuild the split with the class list the model was trained on (the same --class-list or class folders) "
        "or test a checkpoint trained on this split",
    )


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals above; builtin containers and scalars need no global."""

    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _NUMPY_GLOBALS.get((module, name))
        if found is None:
            raise ScoreFileError(
                f"{self._path} refers to the Python global {module}.{name}, which a tsnpipe score file "
                "never contains, so it was not loaded (it may run code); rewrite it with tsnpipe test "
                "or tsnpipe.stages.scores.files.write_scores."
            )
        return found


def read_scores(path: str | os.PathLike) -> dict:
    """Load and check a score file without running any code it might carry."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ScoreFileError(f"Cannot read the score file {path} ({error.strerror}); check the path.") from error
    try:
        content = _AllowListUnpickler(data, path).load()
    except ScoreFileError:
        raise
    except Exception as error:  # a damaged pickle raises many kinds of errors; all mean the same here
        raise ScoreFileError(
            f"{path} is not a readable score file ({type(error).__name__}: {error}); "
            "rewrite it with tsnpipe test."
        ) from error
    return check_scores(content, path)


def write_scores(
    path: str | os.PathLike,
    video_ids: list[str],
    labels: np.ndarray,
    class_names: list[str],
    scores: np.ndarray,
    aggregation: dict,
    source: dict,
    targets: np.ndarray | None = None,
) -> Path:
    """Check and write a score file atomically (temp file, then rename), so a reader never sees half a file.

    `scores` are [N, C] class scores averaged over snippets and crops as `aggregation` says
    (e.g. {"modality": "rgb", "segments": 25, "crops": 10, "average": "raw"}); `source` says where
    they came from (checkpoint, split, ...). Both must hold only plain values (str, numbers, lists,
    dicts) so that `read_scores` accepts them. A multi-label file also holds `targets` [N, C] (0/1: every
    label of each video; `labels` is then each video's first label) and says `multi_label` in its aggregation.
    """
    content = {
        "format": FORMAT,
        "version": VERSION,
        "video_ids": [str(video_id) for video_id in video_ids],
        "labels": np.asarray(labels, dtype=np.int64),
        "class_names": [str(name) for name in class_names],
        "scores": np.asarray(scores, dtype=np.float32),
        "aggregation": dict(aggregation),
        "source": dict(source),
    }
    if targets is not None:
        content["targets"] = np.asarray(targets, dtype=np.uint8)
        content["aggregation"]["multi_label"] = True
    path = Path(path)
    check_scores(content, path)
    data = pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL)
    # Refuse to write what read_scores would refuse to read (e.g. a Path object in `source`).
    _AllowListUnpickler(data, path).load()
    return replace_atomically(path, lambda temp_name: Path(temp_name).write_bytes(data))


def check_scores(content: Any, path: str | os.PathLike) -> dict:
    """Return `content` if it is a well-formed score dict, else raise one sentence saying what is wrong."""

    def refuse(problem: str) -> ScoreFileError:
        return ScoreFileError(
            f"{path} is not a valid tsnpipe score file: {problem}; rewrite it with tsnpipe test."
        )

    if not isinstance(content, dict):
        raise refuse(f"it holds a {type(content).__name__}, not a dict")
    missing = [key for key in KEYS if key not in content]
    if missing:
        raise refuse(f"the keys {', '.join(missing)} are missing")
    form, version = content["format"], content["version"]
    if not (isinstance(form, str) and form == FORMAT and type(version) is int and version == VERSION):  # an array's == is no bool
        raise refuse(f"its format is {repr(form)[:60]} version {repr(version)[:60]}, not {FORMAT!r} version {VERSION}")
    video_ids, labels, class_names, scores = (
        content["video_ids"], content["labels"], content["class_names"], content["scores"]
    )
    if not isinstance(video_ids, list) or not all(isinstance(v, str) for v in video_ids):
        raise refuse("video_ids is not a list of strings")
    if len(set(video_ids)) != len(video_ids):
        duplicates = sorted({v for v in video_ids if video_ids.count(v) > 1})[:3]
        raise refuse(f"video ids repeat (e.g. {', '.join(duplicates)})")
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise refuse("class_names is not a list of strings")
    if not isinstance(scores, np.ndarray) or scores.dtype.kind != "f" or scores.ndim != 2:
        raise refuse("scores is not a 2-D float array")
    if scores.shape != (len(video_ids), len(class_names)):
        raise refuse(
            f"scores has shape {scores.shape} but there are {len(video_ids)} videos and {len(class_names)} classes"
        )
    if not np.isfinite(scores).all():
        raise refuse("scores contains NaN or infinite values")
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (len(video_ids),):
        raise refuse(f"labels is not an integer array of {len(video_ids)} entries")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise refuse(f"labels fall outside 0..{len(class_names) - 1}")
    if not isinstance(content["aggregation"], dict) or not isinstance(content["source"], dict):
        raise refuse("aggregation and source must be dicts")
    targets = content.get("targets")
    if targets is not None and (not isinstance(targets, np.ndarray) or targets.shape != scores.shape
                                or not np.isin(targets, (0, 1)).all()):
        raise refuse(f"targets is not a 0/1 array of {len(video_ids)} videos x {len(class_names)} classes")
    return content


def is_multi_label(score_set: dict) -> bool:
    return score_set.get("targets") is not None


def metrics(scores: np.ndarray, labels: np.ndarray, targets: np.ndarray | None = None,
            map_over: str = "classes") -> dict[str, float]:
    """`accuracies` for one label a video; with multi-label `targets`, the mean average precision ("map": over
    `map_over`, the data set's own mean, `average_precision.dataset_map_over`), both means by name
    ("map_classes", "map_videos"), and the share of videos whose best-scored class is one of their labels ("top1")."""
    if targets is None:
        return accuracies(scores, labels)
    from tsnpipe.stages.scores.average_precision import mean_average_precision

    if len(targets) == 0:
        return {"map": float("nan"), "map_classes": float("nan"), "map_videos": float("nan"), "top1": float("nan")}
    hits = np.asarray(targets)[np.arange(len(targets)), np.asarray(scores).argmax(axis=1)]
    means = {f"map_{over}": mean_average_precision(scores, targets, over) for over in ("classes", "videos")}
    return {"map": means[f"map_{map_over}"], **means, "top1": float(np.mean(hits))}


def accuracies(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1, top-5 and mean class accuracy as fractions in 0..1 (the TSN papers report mean class accuracy).

    Mean class accuracy averages the per-class recall over the classes that have at least one video,
    as the Caffe TSN evaluation does. With fewer than 5 classes, top-5 counts every class (it is 1).
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if len(labels) == 0:
        return {"top1": float("nan"), "top5": float("nan"), "mean_class": float("nan")}
    predicted = scores.argmax(axis=1)
    k = min(5, scores.shape[1])
    top_k = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    recall = per_class_accuracy(scores, labels)
    return {
        "top1": float(np.mean(predicted == labels)),
        "top5": float(np.mean((top_k == labels[:, None]).any(axis=1))),
        "mean_class": float(np.nanmean(recall)),
    }


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of each class's videos predicted as that class; NaN for a class without videos."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    num_classes = scores.shape[1]
    predicted = scores.argmax(axis=1)
    videos = np.bincount(labels, minlength=num_classes)
    correct = np.bincount(labels[predicted == labels], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(videos > 0, correct / np.maximum(videos, 1), np.nan)
