"""Flow against ground truth: Middlebury's .flo files and the mean end-point error (benchmarks and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsnpipe.stages.errors import TsnpipeError

UNKNOWN_FLOW = 1e9  # .flo values above this mark pixels without ground truth


def read_flo(path: Path) -> np.ndarray:
    """A Middlebury .flo file as H x W x 2 float32: b'PIEH', width and height as int32, then u, v interleaved."""
    data = Path(path).read_bytes()
    if data[:4] != b"PIEH":
        raise TsnpipeError(f"{path} is not a Middlebury .flo file (no PIEH tag); give the flow10.flo of a pair.")
    width, height = np.frombuffer(data[4:12], np.int32)
    return np.frombuffer(data[12:], np.float32).reshape(height, width, 2)


def endpoint_error(flow: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance between the H x W x 2 flows over the pixels whose ground truth is known."""
    known = (np.abs(truth) < UNKNOWN_FLOW).all(axis=-1)
    return float(np.linalg.norm(flow - truth, axis=-1)[known].mean())
