"""`tsnpipe extract-flow`: TV-L1 optical flow between consecutive frames of every extracted video.

Each flow row records the image format and which frames were paired (`image_format`, `pairs_of`), so pack
and test can carry them on.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import fields, replace
from pathlib import Path

import click

from tsnpipe.manifests.table import Manifest, manifest_path
from tsnpipe.options import (check_dask, dask_gpu_workers, progress_option, scheduler_option, shard_items, shard_option,
                             stage_lock, workdir_option)
from tsnpipe.planning import Candidates, RawJSON, done_columns, json_objects
from tsnpipe.runner import Stage, run_info_path, run_stage, thread_budget
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.frames import FrameParams


class IterationsType(click.ParamType):
    """`30x10` (inner x outer TV-L1 iterations a warp) or `300` (inner, with OpenCV's 10 outer)."""

    name = "INNER[xOUTER]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*(?:[x*]\s*(\d+))?\s*", str(value).lower())
        if match and int(match[1]) >= 1 and int(match[2] or 10) >= 1:
            return int(match[1]), int(match[2] or 10)
        self.fail(f"{value!r} is not an iteration count: give inner x outer iterations such as 30x10 (the "
                  "default), 300x1 (one round of 300 a warp, like TSN's CUDA TV-L1), or an inner count such as 60.",
                  param, ctx)


class DevicesType(click.ParamType):
    """`0,2`: the CUDA device numbers (as torch sees them) that the torch backend runs on."""

    name = "GPUS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if parts and all(part.isdigit() for part in parts) and len(set(parts)) == len(parts):
            return tuple(int(part) for part in parts)
        self.fail(f"{value!r} is not a list of GPUs: give distinct device numbers separated by commas, such as 0,2.",
                  param, ctx)


def flow_work(source: str, out_dir: Path, workdir: str, params: FlowParams, device: str, batch: int,
              threads: int, devices: tuple[int, ...] | None = None, frames: dict | None = None,
              videos: dict[str, str] | None = None) -> dict:
    """One video's flow, in whichever process the runner picked; `threads` is this process's share of cores.

    With --pairs source, `videos` maps each frames folder to its video file and `frames` holds the
    FrameParams the frames were extracted with; both are empty otherwise.
    """
    from tsnpipe.stages.flow.driver import flow_video

    if params.backend == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        import cv2

        cv2.setNumThreads(threads)
    if params.pairs == "source":
        from tsnpipe.stages.flow.source_pairs import source_flow_video

        video, frame_params = videos[source], FrameParams(**frames)
        done = source_flow_video(video, Path(workdir) / source, out_dir, params, frame_params, device=device, batch=batch)
    else:
        done = flow_video(Path(workdir) / source, out_dir, params, device=device, batch=batch, devices=devices)
    return {**done, **row_facts(params)}


def row_facts(params: FlowParams) -> dict:
    """What every flow row records beside the pair count: the image format and which frames were paired."""
    return {"image_format": params.image_format, "pairs_of": params.pairs}


def flow_batch_work(jobs: list[tuple[str, Path]], workdir: str, params: FlowParams, device: str, batch: int,
                    devices: tuple[int, ...] | None = None):
    """Many videos through the torch backend at once: pairs drawn across videos into every device's
    refilled batch, decode and encode on CPU threads while the devices compute."""
    from tsnpipe.stages.flow.driver import flow_videos

    for index, done in flow_videos([(Path(workdir) / source, out_dir) for source, out_dir in jobs], params,
                                   device=device, batch=batch, devices=devices):
        yield index, done if isinstance(done, Exception) else {**done, **row_facts(params)}


def source_inputs(workdir: Path) -> tuple[dict, dict]:
    """For --pairs source: the params the frames were extracted with, and each frames folder's video file."""
    path = run_info_path(workdir, "frames")
    try:
        recorded = json.loads(path.read_text())["params"]
    except (OSError, ValueError, KeyError):
        raise TsnpipeError(f"--pairs source needs the frame settings in {path}, which cannot be read; "
                           "rerun `tsnpipe extract-frames` into this workdir.") from None
    frames = {f.name: recorded[f.name] for f in fields(FrameParams) if f.name in recorded}
    frames["size"] = tuple(frames["size"]) if frames.get("size") else None
    videos = {row["output"]: row["source"] for row in Manifest(workdir, "frames").rows.values()
              if row.get("status") == "done"}
    return frames, videos


def flow_items(workdir: Path, frames: Manifest | None = None) -> Candidates:
    """Every video whose frames are done, fingerprinted by how and when its frames were made (`frames`: the
    frames manifest when the caller has read it already); as columns, one fingerprint text per video."""
    frames = Manifest(workdir, "frames") if frames is None else frames
    if not len(frames):
        raise TsnpipeError(
            f"{manifest_path(workdir, 'frames')} has no videos; run `tsnpipe extract-frames VIDEO_DIR -w {workdir}` first.")
    pick = ("frames", "params_hash", "started_at", "fingerprint")
    columns = done_columns(frames, ["output", *pick])
    made = json_objects({k: columns[k] for k in pick})
    return Candidates(columns["video_id"], columns["output"],
                      fingerprints=json_objects({"size": columns["frames"], "frames": RawJSON(made)}),
                      weights=[max(int(count or 0) - 1, 0) for count in columns["frames"]])


def choose_backend(backend: str, device: str, executor: str = "loky", scheduler: str | None = None) -> tuple[str, str]:
    """auto: the torch backend on a GPU when there is one (or when --device cuda), OpenCV otherwise. On a Dask
    cluster "a GPU" is a worker declaring a GPU resource, and the torch backend's `auto` device is left for
    each worker to resolve on its own machine; torch on GPU workers when the cluster has none is refused,
    since its videos would wait for ever."""
    if executor == "dask":
        return choose_on_cluster(backend, device, scheduler)
    if backend != "auto" and (backend == "opencv" or device != "auto"):
        return backend, device
    import torch

    gpu = torch.cuda.is_available()
    if backend == "auto":
        backend = "torch" if gpu or device == "cuda" else "opencv"
    if device == "auto":
        device = "cuda" if gpu else "cpu"
    return backend, device


def cpu_backend(workdir: Path, items: Candidates, params: FlowParams, threads: int) -> str:
    """`--backend auto` without a GPU: the backend that this workdir's flow was computed with (so a rerun stays a
    no-op whatever the load), else the faster of the two on the first pairs of the first video, timed now with
    the threads each worker will have."""
    try:
        recorded = json.loads(run_info_path(workdir, "flow").read_text())["params"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded in ("opencv", "torch"):
        click.echo(f"--backend auto: {recorded}, which this workdir's flow was computed with "
                   "(pass --backend to change)")
        return recorded
    from tsnpipe.stages.flow.pick import faster_backend, first_pairs, time_backends

    load = os.getloadavg()[0]
    for item in (item for item in items if item.weight >= 1):
        try:
            pairs = first_pairs(workdir / item.source)
            break
        except TsnpipeError:  # missing or broken frames: that video's row will say so; time another one
            continue
    else:
        return "opencv"  # no video with a pair to time: nothing to compute either
    seconds = time_backends(pairs, params, threads)
    chosen = faster_backend(seconds)
    click.echo(f"--backend auto: {chosen}, the faster on {len(pairs)} pairs of {item.video_id} timed now "
               f"({threads} thread{'s' * (threads != 1)} each, load {load:.1f}): opencv {seconds['opencv']:.2f} s a "
               f"pair, torch {seconds['torch']:.2f} s")
    return chosen


def choose_on_cluster(backend: str, device: str, scheduler: str) -> tuple[str, str]:
    if backend == "opencv" or device == "cpu":
        return ("torch" if backend == "torch" else "opencv"), device
    gpus = dask_gpu_workers(scheduler)
    if backend == "auto":
        return ("torch", device) if gpus else ("opencv", device)
    if not gpus:
        raise TsnpipeError(f"No worker of the Dask cluster at {scheduler} declares a GPU resource, so the torch "
                           "backend's videos would wait for ever; start GPU workers with `dask worker "
                           f"{scheduler} --resources GPU=1`, or pass --device cpu (or --backend opencv).")
    return backend, device


def describe(params: FlowParams, device: str, batch: int, devices: tuple[int, ...] | None = None) -> str:
    on = f"{device} {','.join(map(str, devices))}" if devices else device
    where = f"torch on {on}, batch {batch}" if params.backend == "torch" else "opencv"
    return (f"TV-L1 ({where}): tau {params.tau:g}, lambda {params.lambda_:g}, theta {params.theta:g}, "
            f"{params.nscales} scales x {params.scale_step:g}, {params.warps} warps, epsilon {params.epsilon:g}, "
            f"{params.inner_iterations}x{params.outer_iterations} iterations, median {params.median_filtering}; "
            f"bound +-{params.bound:g} -> {params.image_format}"
            + (f" q{params.jpeg_quality}" if params.image_format == "jpg" else "")
            + ("; pairs: each frame to its next source frame" if params.pairs == "source" else ""))


@click.command("extract-flow")
@workdir_option
@click.option("--backend", "flow_backend", type=click.Choice(["auto", "opencv", "torch"]), default="auto",
              show_default=True, help="TV-L1 implementation: OpenCV's (CPU), or tsnpipe's batched torch one "
              "(CUDA or CPU). auto: torch when a GPU is present, opencv otherwise.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device of the torch backend; cuda is every visible GPU, one solver each, videos spread over them.")
@click.option("--devices", type=DevicesType(), default=None,
              help="Only these GPUs, e.g. 0,2 (numbers as torch sees them under CUDA_VISIBLE_DEVICES).")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Frame pairs computed at once by the torch backend on each device (slots refilled as pairs "
              "finish); GPU memory grows with it.")
@click.option("--iterations", type=IterationsType(), default="30x10", show_default=True,
              help="TV-L1 iterations a warp, inner x outer (a median filter runs before each outer round), "
              "as OpenCV's and dense_flow's defaults; a warp stops earlier once the flow settles (epsilon).")
@click.option("--bound", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Flow values are clipped to +-bound pixels, then mapped to 0..255 (128 is no motion).")
@click.option("--format", "image_format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Image format of flow_x_/flow_y_ files: JPEG quality 95 (the references'), or lossless PNG.")
@click.option("--pairs", "pairing", type=click.Choice(["frames", "source"]), default="frames", show_default=True,
              help="frames: flow between consecutive extracted frames (at 10 fps, 0.1 s apart). source: for each "
              "extracted frame, the flow to the next frame of the video at its own rate (TSN's motion scale).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Videos in parallel. Default: one per core (opencv, torch on cpu); 1 on cuda.")
@click.option("--executor", type=click.Choice(["loky", "threading", "dask"]), default="loky", show_default=True,
              help="How videos are spread: local processes (loky), threads, or a Dask cluster (with --scheduler). "
              "On Dask the torch backend (with --device auto or cuda) runs only on workers declaring a GPU "
              "resource (dask worker --resources GPU=1).")
@scheduler_option
@progress_option
@shard_option
def extract_flow(workdir, flow_backend, device, devices, batch, iterations, bound, image_format, pairing, jobs,
                 executor, scheduler, progress, shard):
    """TV-L1 optical flow between consecutive frames of every video in W/frames, into W/flow/<video_id>/.

    Pair i (from img_i to img_{i+1}) is written as flow_x_0000i.jpg and flow_y_0000i.jpg: each component
    clipped to +-bound and mapped to round(255 * (v + bound) / (2 * bound)); N frames give N - 1 pairs.
    With --pairs source, pair i is instead the flow from the source frame img_i shows to the next frame of
    the video at its own rate (decoded again from the video the frames came from), as TSN computed flow.
    Reruns only touch videos whose frames are new or were re-extracted, that failed before, or that were
    computed with other options (backend, iterations, bound, format). Videos with missing or broken frames
    become failed rows in W/manifests/flow.parquet and the run goes on; the exit code is 1 when any video failed.
    """
    check_dask(executor, scheduler)
    workdir_path = Path(workdir)
    backend, device = choose_backend(flow_backend, device, executor, scheduler)
    if devices and (backend != "torch" or device == "cpu"):
        raise TsnpipeError("--devices picks GPUs for the torch backend; add --backend torch --device cuda, or drop it.")
    params = FlowParams(backend=backend, bound=bound, image_format=image_format, inner_iterations=iterations[0],
                        outer_iterations=iterations[1], pairs=pairing)
    frames, videos = source_inputs(workdir_path) if pairing == "source" else ({}, {})
    if jobs is None:
        jobs = 1 if device == "cuda" and backend == "torch" else os.cpu_count() or 1
    threads = thread_budget(jobs)
    items = shard_items(flow_items(workdir_path), shard)
    if flow_backend == "auto" and device == "cpu" and executor != "dask":
        params = replace(params, backend=cpu_backend(workdir_path, items, params, threads))
        backend = params.backend
    gpu_tasks = executor == "dask" and backend == "torch" and device in ("auto", "cuda")
    pairs = sum(items.weights)
    click.echo(f"extract-flow: {len(items):,} videos ({pairs:,} frame pairs) in {workdir_path / 'frames'}"
               + (f" (shard {shard})" if shard else "") + "; "
               f"{describe(params, device, batch, devices)}; {jobs} jobs ({executor}"
               + (", on workers with a GPU resource)" if gpu_tasks else ")"))
    work = functools.partial(flow_work, workdir=str(workdir_path.resolve()), params=params, device=device,
                             batch=batch, threads=threads, devices=devices, frames=frames, videos=videos)
    stage = Stage(name="flow", verb="computed", params=params.hashed(), output_root="flow", work=work,
                  inputs={"frames_manifest": str(manifest_path(workdir_path, "frames"))}, unit="pair",
                  hash_content=False,
                  dask_resources={"GPU": 1} if gpu_tasks else None,
                  batch_work=functools.partial(flow_batch_work, workdir=str(workdir_path.resolve()), params=params,
                                               device=device, batch=batch, devices=devices)
                  if backend == "torch" and params.pairs == "frames" else None)
    with stage_lock(workdir_path, "flow", shard, "tsnpipe extract-flow", len(items)):
        summary = run_stage(workdir_path, stage, items, jobs=jobs, backend=executor, scheduler=scheduler,
                            progress=progress, shard=shard)
    click.echo(summary.line())
    if summary.failed:
        raise SystemExit(1)
