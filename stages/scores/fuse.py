"""Late fusion: a weighted sum of the class scores of several streams (RGB, flow, RGB difference).

Files are joined by video id, never by row position, and must agree on the videos, the class list and
the labels. The paper fuses raw scores (RGB:flow 1:1.5 gives 93.5% on UCF101 split 1); `softmax=True`
fuses class probabilities instead, as mmaction2 1.x does. Weights can be searched on a grid, but only
on validation score files that share no video with the files whose accuracy is reported.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.scores.files import (
    accuracies, check_class_order, is_multi_label, metrics, per_class_accuracy, read_scores, write_scores,
)

# Relative weights tried by the search for every file after the first (whose weight is 1).
WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
MAX_SEARCHED_FILES = 4  # 2 x 12**3 = 3,456 combinations; more files would make the grid too large
EXAMPLES = 3  # how many differing videos an error message names


class FusionError(TsnpipeError):
    """Score files that cannot be fused, or fusion options that do not fit them."""


@dataclass
class FusionResult:
    """What `fuse_files` did: the weights it used, the accuracy rows to print and the fused scores."""

    weights: tuple[float, ...]
    searched: bool
    validation: dict[str, float] | None  # accuracies of the chosen weights on the validation files
    rows: list[tuple[str, dict[str, float]]]
    fused: dict
    output: Path | None


def parse_weights(text: str) -> tuple[float, ...]:
    """Parse `1:1.5` or `0.5:0.5:1` into non-negative finite weights, not all zero."""
    parts = text.split(":")
    weights = []
    for part in parts:
        try:
            weight = float(part)
        except ValueError:
            raise FusionError(
                f"The weights {text!r} are not numbers separated by ':'; write one per score file, e.g. 1:1.5."
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise FusionError(f"The weight {part!r} in {text!r} must be a finite number >= 0, e.g. 1:1.5.")
        weights.append(weight)
    if not any(weights):
        raise FusionError(f"The weights {text!r} are all zero; give at least one positive weight, e.g. 1:1.5.")
    return tuple(weights)


def format_weights(weights: tuple[float, ...]) -> str:
    """The inverse of `parse_weights`: (1.0, 1.5) -> '1:1.5'."""
    return ":".join(f"{weight:g}" for weight in weights)


def align(score_sets: list[dict], names: list[str]) -> list[dict]:
    """Return the score sets with rows sorted by video id, after checking they describe the same test."""
    first, first_name = score_sets[0], names[0]
    for other, name in zip(score_sets[1:], names[1:]):
        _check_same_videos(first, other, first_name, name)
        _check_same_classes(first, other, first_name, name)
    aligned = [_sorted_by_video(score_set) for score_set in score_sets]
    for other, name in zip(aligned[1:], names[1:]):
        _check_same_labels(aligned[0], other, first_name, name)
    return aligned


def combine(aligned: list[dict], weights: tuple[float, ...], softmax: bool) -> np.ndarray:
    """Weighted sum of raw scores, or with `softmax` a weighted average of class probabilities."""
    return weighted_sum(stream_arrays(aligned, softmax), weights, softmax).astype(np.float32)


def stream_arrays(aligned: list[dict], softmax: bool) -> list[np.ndarray]:
    """What gets summed for each stream: raw scores, or class probabilities."""
    return [probabilities(s) if softmax else s["scores"].astype(np.float64) for s in aligned]


def weighted_sum(arrays: list[np.ndarray], weights: tuple[float, ...], softmax: bool) -> np.ndarray:
    total = sum(weight * array for weight, array in zip(weights, arrays))
    return total / sum(weights) if softmax else total


def probabilities(score_set: dict) -> np.ndarray:
    """Class probabilities: the scores themselves if they already average softmax outputs."""
    scores = score_set["scores"].astype(np.float64)
    if score_set["aggregation"].get("average") == "softmax":
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def search_weights(
    validation: list[dict], validation_names: list[str], softmax: bool
) -> tuple[tuple[float, ...], dict[str, float]]:
    """Find the grid weights with the best mean class accuracy (then top-1) on validation score sets.

    The first stream's weight is 1 (only ratios matter to the arg-max), or 0 to try leaving it out.
    """
    if len(validation) > MAX_SEARCHED_FILES:
        raise FusionError(
            f"A weight search over {len(validation)} score files is too large for the grid; "
            f"search at most {MAX_SEARCHED_FILES} files or give --weights."
        )
    aligned = align(validation, validation_names)
    labels = aligned[0]["labels"]
    arrays = stream_arrays(aligned, softmax)
    best_weights, best_key = None, None
    for first in (1.0, 0.0):
        for rest in itertools.product(WEIGHT_GRID, repeat=len(aligned) - 1):
            weights = (first, *rest)
            if not any(weights):
                continue
            fused = weighted_sum(arrays, weights, softmax)
            key = (float(np.nanmean(per_class_accuracy(fused, labels))), float(np.mean(fused.argmax(1) == labels)))
            if best_key is None or key > best_key:
                best_weights, best_key = weights, key
    if best_weights[0] == 0:  # (0, 0.25) and (0, 1) fuse alike; say it with the first used stream at 1
        scale = next(w for w in best_weights if w)
        best_weights = tuple(w / scale for w in best_weights)
    return best_weights, accuracies(weighted_sum(arrays, best_weights, softmax), labels)


def fuse_files(
    paths: list[Path],
    weights: tuple[float, ...] | None = None,
    softmax: bool = False,
    validation_paths: list[Path] | None = None,
    output: Path | None = None,
) -> FusionResult:
    """Read score files, pick or check the weights, fuse, measure every input and the fusion, write."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise FusionError("Fusion needs at least two score files, e.g. tsnpipe fuse rgb.pkl flow.pkl.")
    inputs = [*paths, *(validation_paths or [])]
    if output is not None and any(Path(output).resolve() == Path(p).resolve() for p in inputs):
        raise FusionError(f"The output {output} is one of the input score files; write the fusion to a new file.")
    score_sets = [read_scores(path) for path in paths]
    names = [str(path) for path in paths]
    aligned = align(score_sets, names)
    if not softmax:
        _check_same_average(aligned, names)
    searched = bool(validation_paths)
    validation_result = None
    multi = [is_multi_label(s) for s in aligned]
    if any(multi) and not all(multi):
        raise FusionError("Some score files are multi-label and some are not; fuse scores of runs trained on the same split.")
    if searched and all(multi):
        raise FusionError("--search-weights ranks weights by mean class accuracy, which multi-label scores do not have; "
                          "give --weights for multi-label files.")
    if searched:
        validation = [read_scores(path) for path in validation_paths]
        validation_names = [str(path) for path in validation_paths]
        _check_validation_fits(validation, validation_names, aligned, names)
        weights, validation_result = search_weights(validation, validation_names, softmax)
    elif weights is None:
        weights = (1.0,) * len(paths)
    if len(weights) != len(paths):
        raise FusionError(
            f"{len(weights)} weights were given for {len(paths)} score files; "
            f"give one weight per file in the same order, e.g. --weights {format_weights((1.0,) * len(paths))}."
        )
    labels, targets = aligned[0]["labels"], aligned[0].get("targets")
    fused_scores = combine(aligned, weights, softmax)
    over = aligned[0]["aggregation"].get("map_over", "classes")  # multi-label: the data set's mean (test recorded it)
    rows = [(name, metrics(s["scores"], labels, targets, over)) for name, s in zip(names, aligned)]
    rows.append((f"fused {format_weights(weights)}", metrics(fused_scores, labels, targets, over)))
    fused = _fused_content(aligned, names, weights, softmax, fused_scores, validation_paths)
    if output is not None:
        write_scores(output, **{key: fused[key] for key in (
            "video_ids", "labels", "class_names", "scores", "aggregation", "source")}, targets=targets)
    return FusionResult(weights=weights, searched=searched, validation=validation_result, rows=rows, fused=fused,
                        output=output)


def accuracy_table(rows: list[tuple[str, dict[str, float]]]) -> str:
    """Plain-text table of top-1, top-5 and mean class accuracy in percent (multi-label: mAP and top-1 in labels)."""
    width = max(len("input"), *(len(name) for name, _ in rows))
    if rows and "map" in rows[0][1]:
        lines = [f"{'input':<{width}}  {'mAP':>6}  {'top-1 in labels':>15}"]
        lines += [f"{name:<{width}}  {100 * r['map']:6.2f}  {100 * r['top1']:15.2f}" for name, r in rows]
        return "\n".join(lines)
    lines = [f"{'input':<{width}}  {'top-1':>6}  {'top-5':>6}  {'mean class':>10}"]
    for name, result in rows:
        lines.append(
            f"{name:<{width}}  {100 * result['top1']:6.2f}  {100 * result['top5']:6.2f}  "
            f"{100 * result['mean_class']:10.2f}"
        )
    return "\n".join(lines)


def _fused_content(aligned, names, weights, softmax, fused_scores, validation_paths) -> dict:
    first = aligned[0]
    modalities = [str(s["aggregation"].get("modality", "?")) for s in aligned]
    return {
        "video_ids": list(first["video_ids"]),
        "labels": first["labels"],
        "class_names": list(first["class_names"]),
        "scores": fused_scores,
        "aggregation": {
            "modality": "+".join(modalities),
            "fusion": "softmax" if softmax else "raw",
            "average": "softmax" if softmax else first["aggregation"].get("average", "raw"),
            "weights": list(weights),
            "inputs": [{"path": name, "aggregation": s["aggregation"]} for name, s in zip(names, aligned)],
            "weights_searched_on": [str(p) for p in validation_paths] if validation_paths else None,
        },
        "source": {"fused_from": list(names)},
    }


def _sorted_by_video(score_set: dict) -> dict:
    order = np.argsort(np.array(score_set["video_ids"], dtype=object), kind="stable")
    return {
        **score_set,
        "video_ids": [score_set["video_ids"][i] for i in order],
        "labels": score_set["labels"][order],
        "scores": score_set["scores"][order],
        **({"targets": score_set["targets"][order]} if is_multi_label(score_set) else {}),
    }


def _check_same_videos(first: dict, other: dict, first_name: str, name: str) -> None:
    first_ids, other_ids = set(first["video_ids"]), set(other["video_ids"])
    if first_ids == other_ids:
        return
    only_first, only_other = sorted(first_ids - other_ids), sorted(other_ids - first_ids)
    raise FusionError(
        f"{first_name} and {name} do not score the same videos ({len(first_ids)} and {len(other_ids)} videos; "
        f"{len(only_first)} only in {first_name}{_examples(only_first)}, "
        f"{len(only_other)} only in {name}{_examples(only_other)}); score both streams on the same test list."
    )


def _check_same_classes(first: dict, other: dict, first_name: str, name: str) -> None:
    check_class_order(first["class_names"], other["class_names"], first_name, name,
                      "score both streams with models trained on the same splits")


def _check_same_labels(first: dict, other: dict, first_name: str, name: str) -> None:
    differ = np.flatnonzero(first["labels"] != other["labels"])
    if len(differ) == 0 and is_multi_label(first) and is_multi_label(other):
        differ = np.flatnonzero((first["targets"] != other["targets"]).any(axis=1))
    if len(differ) == 0:
        return
    examples = ", ".join(
        f"{first['video_ids'][i]} ({first['labels'][i]} vs {other['labels'][i]})" for i in differ[:EXAMPLES]
    )
    raise FusionError(
        f"{first_name} and {name} disagree on the labels of {len(differ)} videos (e.g. {examples}); "
        "score both streams with the same split files."
    )


def _check_same_average(aligned: list[dict], names: list[str]) -> None:
    kinds = {name: s["aggregation"].get("average", "raw") for name, s in zip(names, aligned)}
    if len(set(kinds.values())) > 1:
        detail = ", ".join(f"{name} averages {kind} scores" for name, kind in kinds.items())
        raise FusionError(
            f"The score files were averaged differently ({detail}), so their raw sum is meaningless; "
            "fuse them with --softmax or rescore them the same way."
        )


def _check_validation_fits(validation, validation_names, aligned, names) -> None:
    if len(validation) != len(aligned):
        raise FusionError(
            f"{len(validation)} validation files were given for {len(aligned)} score files; "
            "give one validation file per stream, in the same order."
        )
    test_ids = set(aligned[0]["video_ids"])
    for val, val_name, test, name in zip(validation, validation_names, aligned, names):
        shared = sorted(test_ids & set(val["video_ids"]))
        if shared:
            raise FusionError(
                f"The validation file {val_name} shares {len(shared)} of its {len(val['video_ids'])} videos with "
                f"the test files{_examples(shared)}; tuning weights on the videos whose accuracy is reported "
                "overstates it, so score videos held out of training and of the test list instead."
            )
        check_class_order(val["class_names"], test["class_names"], f"The validation file {val_name}", name,
                          "score both with the same model and splits")
        val_modality, modality = val["aggregation"].get("modality"), test["aggregation"].get("modality")
        if val_modality and modality and val_modality != modality:
            raise FusionError(
                f"The validation file {val_name} holds {val_modality} scores but {name} holds {modality} scores; "
                "give the validation files in the same order as the score files."
            )


def _examples(video_ids: list[str]) -> str:
    if not video_ids:
        return ""
    more = ", ..." if len(video_ids) > EXAMPLES else ""
    return f" (e.g. {', '.join(video_ids[:EXAMPLES])}{more})"
