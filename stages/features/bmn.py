"""Resample a video's snippet features to a fixed number of steps and write the CSV BMN and BSN read.

The rule is mmaction2's `pool_feature` (`tools/data/activitynet/activitynet_feature_postprocessing.py`), which
made the 100 x 400 ActivityNet CSVs BMN is trained on: the T x D features are a piecewise-linear function
of the snippet index (scipy `interp1d` over 0 .. T - 1); the span [eps, T - 1 - eps] (eps = 1e-4) is cut into
`steps` equal anchors of width a = (T - 1 - 2 eps) / steps; step j is the mean of the function at the
`bins` = 3 points eps + j a + i a / 3, i = 0, 1, 2 (the anchor's left end and two thirds into it, not its
centre: mmaction2's choice, kept). A video of one snippet is that snippet repeated `steps` times. Each
stream is resampled alone, then the streams are joined side by side (RGB then flow, whatever the order of the
`--checkpoint`s: `column_order`; mmaction2's ActivityNet CSVs, `f0 ... f(D-1)`),
and every value written with four decimals, as mmaction2 writes them. numpy's `interp` does the linear
interpolation here (the same arithmetic as `interp1d`'s linear kind, without scipy).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

EPS = 1e-4
SAMPLE_BINS = 3


MODALITY_ORDER = {"rgb": 0, "rgbdiff": 1, "flow": 2}


def column_order(streams: list[dict]) -> list[str]:
    """The names of a feature set's streams (their recorded `name` and `modality`) in the CSV's order: RGB, then
    RGB differences, then flow; streams of one modality in the order they were given."""
    ranked = sorted(enumerate(streams), key=lambda item: (MODALITY_ORDER.get(item[1].get("modality"), 3), item[0]))
    return [stream["name"] for _, stream in ranked]


def resample(features: np.ndarray, steps: int = 100, bins: int = SAMPLE_BINS) -> np.ndarray:
    """mmaction2's pool_feature with mean pooling: T x D -> steps x D (float64)."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) == 1:
        return np.repeat(features, steps, axis=0)
    start, end = EPS, len(features) - 1 - EPS
    anchor = (end - start) / steps
    points = np.array([start + j * anchor + i / bins * anchor for j in range(steps) for i in range(bins)])
    lower = np.clip(np.floor(points).astype(np.int64), 0, len(features) - 2)
    weight = (points - lower)[:, None]
    values = features[lower] * (1 - weight) + features[lower + 1] * weight
    return values.reshape(steps, bins, -1).mean(axis=1)


def csv_text(table: np.ndarray) -> str:
    """mmaction2's CSV: a header f0,...,f(D-1), then one line per step, four decimals, no final newline."""
    lines = [",".join(f"f{i}" for i in range(table.shape[1]))]
    lines += [",".join(f"{x:.4f}" for x in row) for row in table.tolist()]
    return "\n".join(lines)


def write_csv(path: Path, streams: list[np.ndarray], steps: int) -> None:
    """Resample each stream, join them side by side and write the CSV atomically."""
    table = np.concatenate([resample(stream, steps) for stream in streams], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(csv_text(table))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
