"""Flow for whole videos: one video with either backend, or many videos through batches of pairs.

A video's flow goes into the out_dir it is given (the runner passes a temporary sibling folder and
renames it into place); the facts returned are the number of pairs written and the fraction of flow
values that the bound clipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow.images import list_frames, read_grey, write_flow_pair
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
    devices: Sequence[int] | None = None,
) -> dict:
    """Flow between consecutive frames of one video, written into out_dir; returns its facts.

    `device`, `batch` and `devices` only matter for the torch backend. Raises TsnpipeError for missing or
    undecodable frames.
    """
    if params.backend == "torch":
        [(_, result)] = list(flow_videos([(frames_dir, out_dir)], params, device=device, batch=batch, devices=devices))
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


def resolve_devices(device: str, devices: Sequence[int] | None = None) -> list:
    """The torch devices to run on: 'cuda' is every visible GPU (or those `devices` names), 'cuda:1' one,
    'auto' every GPU when torch sees one, else the CPU; asking for an absent GPU is an error."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        device = "cuda" if count else "cpu"
    if device == "cpu":
        if devices:
            raise TsnpipeError("--devices picks GPUs; use it with --device cuda or auto, not --device cpu.")
        return [torch.device("cpu")]
    if not count:
        raise TsnpipeError(f"--device {device} was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    if device != "cuda":
        return [torch.device(device)]
    wanted = list(devices) if devices else list(range(count))
    absent = [index for index in wanted if not 0 <= index < count]
    if absent:
        raise TsnpipeError(f"--devices names GPU {absent[0]} but torch sees {count} GPU(s), numbered 0 to "
                           f"{count - 1}; check CUDA_VISIBLE_DEVICES and pick from those.")
    return [torch.device("cuda", index) for index in wanted]


def flow_videos(
    jobs: Iterable[Job],
    params: FlowParams,
    device: str = "auto",
    batch: int = 32,
    *,
    devices: Sequence[int] | None = None,
    threads: int | None = None,
    prefetch: int | None = None,
    compile: bool = False,
) -> Iterator[tuple[int, dict | Exception]]:
    """Flow many videos, yielding (job index, facts or the exception that failed it) as each finishes.

    With the torch backend, every device (`resolve_devices`) solves pairs drawn across videos with
    `batch` slots that are refilled as pairs finish (streaming.py, refill.py); CPU threads decode the
    frames in chunks and quantize/encode the flow while the devices compute. `prefetch` is how many
    chunks are decoded ahead; `compile` runs the inner iteration through torch.compile. With the
    opencv backend, the videos are done one after another (the runner gives each process its own videos).
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
    yield from _torch_flow_videos(jobs, params, resolve_devices(device, devices), batch, threads, prefetch, compile)


def _torch_flow_videos(jobs, params, devices, batch, threads, prefetch, compile) -> Iterator:
    from tsnpipe.stages.flow.streaming import stream_flow_videos
    from tsnpipe.stages.flow.torch_tvl1 import compiled_iteration, iteration_for

    step: Callable = compiled_iteration() if compile else iteration_for(devices[0])
    yield from stream_flow_videos(jobs, params, devices, batch, step, threads=threads or max(2, os.cpu_count() or 2),
                                  lookahead=prefetch)
