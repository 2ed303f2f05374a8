"""Flow for whole videos: one video with either backend, or many videos through batches of pairs.

A video's flow goes into the out_dir it is given (the runner passes a temporary sibling folder and
renames it into place); the facts returned are the number of pairs written and the fraction of flow
values that the bound clipped.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.images import list_frames, read_grey, read_video_grey, write_flow_pair
from tsnpipe.stages.flow.params import FlowParams

Job = tuple[str | os.PathLike, str | os.PathLike]


def facts(pairs: int, clipped: int, height: int, width: int) -> dict:
    """The per-video record: pairs written and the clipped fraction of all 2 * pairs * H * W values."""
    total = 2 * pairs * height * width
    return {"pairs": pairs, "clipped_fraction": clipped / total if total else 0.0}


def flow_video(
    frames_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    params: FlowParams,
    *,
    device: str = "auto",
    batch: int = 16,
) -> dict:
    """Flow between consecutive frames of one video, written into out_dir; returns its facts.

    `device` and `batch` only matter for the torch backend. Raises TsnpipeError for missing or
    undecodable frames.
    """
    if params.backend == "torch":
        [(_, result)] = list(flow_videos([(frames_dir, out_dir)], params, device=device, batch=batch))
        if isinstance(result, Exception):
            raise result
        return result
    from tsnpipe.stages.flow.opencv_tvl1 import create_tvl1, opencv_flow

    paths = list_frames(frames_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tvl1 = create_tvl1(params)
    previous = read_grey(paths[0])
    clipped = 0
    for pair_index, path in enumerate(paths[1:]):
        current = read_grey(path)
        if current.shape != previous.shape:
            raise TsnpipeError(
                f"The frame {path} is {current.shape[1]}x{current.shape[0]} but {paths[0].name} is "
                f"{previous.shape[1]}x{previous.shape[0]}; rerun `tsnpipe extract-frames` for this video."
            )
        clipped += write_flow_pair(out, pair_index, opencv_flow(tvl1, previous, current), params)
        previous = current
    return facts(len(paths) - 1, clipped, *previous.shape)


def resolve_device(device: str):
    """'auto' is CUDA when torch sees a GPU, else the CPU; asking for an absent GPU is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TsnpipeError(f"--device {device} was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    return torch.device(device)


@dataclass
class _Video:
    """A video in flight: its decoded frames until all its pairs are computed, then its writes."""

    index: int
    out_dir: Path
    frames: np.ndarray | None
    pairs: int
    computed: int = 0
    writes: list[Future] = field(default_factory=list)


def _load(frames_dir, out_dir) -> tuple[np.ndarray, Path]:
    frames = read_video_grey(list_frames(frames_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return frames, out


def _finish(video: _Video, height: int, width: int) -> tuple[int, dict | Exception]:
    try:
        clipped = sum(future.result() for future in video.writes)
    except Exception as exc:  # a failed write fails this video only; the runner records it
        return video.index, exc
    return video.index, facts(video.pairs, clipped, height, width)


def flow_videos(
    jobs: Iterable[Job],
    params: FlowParams,
    device: str = "auto",
    batch: int = 32,
    *,
    threads: int | None = None,
    prefetch: int = 4,
    compile: bool = False,
) -> Iterator[tuple[int, dict | Exception]]:
    """Flow many videos, yielding (job index, facts or the exception that failed it) as each finishes.

    With the torch backend, pairs are drawn across videos into batches of `batch` pairs of equal
    size; CPU threads decode the next videos and quantize/encode finished flow while the device
    computes. `compile` runs the inner iteration through torch.compile. With the opencv backend,
    the videos are done one after another (the runner gives each process its own videos).
    """
    jobs = list(jobs)
    if params.backend == "opencv":
        for index, (frames_dir, out_dir) in enumerate(jobs):
            try:
                yield index, flow_video(frames_dir, out_dir, params)
            except Exception as exc:  # one video's failure must not stop the others
                yield index, exc
        return
    if params.gamma != 0:
        raise TsnpipeError("The torch TV-L1 backend does not implement gamma != 0; use --backend opencv for it.")
    if batch < 1:
        raise TsnpipeError(f"--batch must be at least 1 (got {batch}).")
    yield from _torch_flow_videos(jobs, params, resolve_device(device), batch, threads, prefetch, compile)


def _torch_flow_videos(jobs, params, device, batch, threads, prefetch, compile) -> Iterator:
    import torch

    from tsnpipe.stages.flow.torch_tvl1 import compiled_iteration, iteration_for

    step: Callable = compiled_iteration() if compile else iteration_for(device)
    threads = threads or max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(threads) as pool, torch.inference_mode():
        waiting = iter(enumerate(jobs))
        loads: deque = deque()

        def load_next() -> None:
            nxt = next(waiting, None)
            if nxt is not None:
                loads.append((nxt[0], pool.submit(_load, *nxt[1])))

        for _ in range(max(1, prefetch)):
            load_next()
        queues: dict[tuple[int, int], list[tuple[_Video, int]]] = {}
        writing: list[tuple[_Video, int, int]] = []
        while loads:
            index, future = loads.popleft()
            load_next()
            try:
                frames, out = future.result()
            except Exception as exc:  # missing or broken frames fail this video only
                yield index, exc
                continue
            if len(frames) < 2:
                yield index, facts(0, 0, 0, 0)
                continue
            video = _Video(index, out, frames, len(frames) - 1)
            queue = queues.setdefault(frames.shape[1:], [])
            queue.extend((video, k) for k in range(video.pairs))
            while len(queue) >= batch:
                chunk = queue[:batch]
                del queue[:batch]
                writing += _run_batch(chunk, params, device, step, pool)
                writing = yield from _yield_written(writing, wait=False)
        for queue in queues.values():
            if queue:
                writing += _run_batch(queue, params, device, step, pool)
        yield from _yield_written(writing, wait=True)


def _run_batch(chunk, params, device, step, pool) -> list[tuple[_Video, int, int]]:
    """Compute one batch on the device, hand its images to the encoder threads; returns videos now complete."""
    import torch

    from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow

    first = torch.from_numpy(np.stack([video.frames[k] for video, k in chunk])).unsqueeze(1)
    second = torch.from_numpy(np.stack([video.frames[k + 1] for video, k in chunk])).unsqueeze(1)
    if device.type == "cuda":
        first, second = first.pin_memory(), second.pin_memory()
    first = first.to(device, non_blocking=True).float()
    second = second.to(device, non_blocking=True).float()
    flow = tvl1_flow(first, second, params, step).permute(0, 2, 3, 1).cpu().numpy()
    complete = []
    for (video, k), pair_flow in zip(chunk, flow):
        video.writes.append(pool.submit(write_flow_pair, video.out_dir, k, pair_flow, params))
        video.computed += 1
        if video.computed == video.pairs:
            height, width = video.frames.shape[1:]
            video.frames = None
            complete.append((video, height, width))
    return complete


def _yield_written(writing, wait: bool):
    """Yield the complete videos whose images are all written (all of them when `wait`); return the rest."""
    still = []
    for video, height, width in writing:
        if wait or all(future.done() for future in video.writes):
            yield _finish(video, height, width)
        else:
            still.append((video, height, width))
    return still
