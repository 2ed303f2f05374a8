"""Which TV-L1 backend is faster on this CPU, now: a short measurement on real pairs.

On the CPU neither backend wins everywhere: torch's eager TV-L1 and OpenCV's DualTVL1 trade places with the
machine, its load and the thread count each worker gets (benchmarks: 0.9-1.3x either way). So `extract-flow
--backend auto` without a GPU times both on the first pairs of the first video, alternated (OpenCV, torch,
OpenCV, torch, so that a change of load hits both alike), each with the threads a worker will have, and
keeps the faster. The pairs measured are thrown away; the videos are computed again by the chosen backend.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.images import list_frames, read_grey
from tsnpipe.stages.flow.params import FlowParams

PAIRS = 2  # pairs each backend is timed on; a pair takes ~0.5-3 s on one core at 340x256


def first_pairs(frames_dir: str | os.PathLike, count: int = PAIRS) -> list[tuple[np.ndarray, np.ndarray]]:
    paths = list_frames(frames_dir)[: count + 1]
    images = [read_grey(path) for path in paths]
    if len(images) < 2:
        raise TsnpipeError(f"{frames_dir} has fewer than two frames, so there is no pair to time the backends on.")
    return list(zip(images, images[1:]))


def time_backends(pairs: list[tuple[np.ndarray, np.ndarray]], params: FlowParams, threads: int) -> dict[str, float]:
    """Seconds a pair for each backend on `pairs`, alternated pair by pair, with `threads` threads each.
    The callers' thread settings are restored afterwards."""
    import cv2
    import torch

    from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow
    from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow

    tvl1 = create_tvl1(replace(params, backend="opencv"))
    torch_params = replace(params, backend="torch")

    def opencv_pair(first, second):
        opencv_flow(tvl1, first, second)

    def torch_pair(first, second):
        stack = torch.from_numpy(np.stack((first, second)))[:, None].float()
        with torch.inference_mode():
            tvl1_flow(stack[:1], stack[1:], torch_params)

    saved = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)
    seconds = {"opencv": 0.0, "torch": 0.0}
    try:
        for first, second in pairs:
            for name, run in (("opencv", opencv_pair), ("torch", torch_pair)):
                start = time.perf_counter()
                run(first, second)
                seconds[name] += time.perf_counter() - start
    finally:
        cv2.setNumThreads(saved[0])
        torch.set_num_threads(saved[1])
    return {name: total / len(pairs) for name, total in seconds.items()}


def faster_backend(seconds: dict[str, float]) -> str:
    """The backend with fewer seconds a pair; OpenCV on a tie (no torch import in the workers)."""
    return "torch" if seconds["torch"] < seconds["opencv"] else "opencv"
