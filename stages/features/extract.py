"""Snippet features of many videos: plan every video, read batches in loader workers, one forward per stream.

Per batch (`inputs.SnippetBatches`: about `batch` snippets, from as many videos as it takes), each stream's
uint8 pictures go to the device whole and are cut there into the test's views (`transforms.video_views` for
TSN: centre crop at the checkpoint's size, or 3 / 10 crops; `clips.clip_views` for 3D models: the 128x171
resize and its crops), normalised as the checkpoint's test normalised them, and sent through the network
in one forward pass, the backbone under bf16 autocast on a GPU and the classifier in fp32 (`tsnpipe test`'s
rule). On CUDA the copy and view-cutting of the next batch run on a side stream while the model works on
this one (`batches.DeviceBatches`, as in test and training). Features of a snippet's crops are averaged. A video is written (`writers.write_video`) as soon as
the batch holding its last snippet is done, and reported then; its rows go to the manifest one by one, so
a kill loses only the videos whose snippets were in flight.

Every forward pass has the same shape: the last, partial batch is padded with zeros (their outputs are
dropped). The libraries pick convolution algorithms by shape (oneDNN on the CPU, cuDNN on a GPU), and a
rerun after a kill groups the remaining videos into other batches; with one shape, a video's features do
not depend on which videos shared its batches, and the rerun writes the very bytes the uninterrupted run
would have.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.features.inputs import SnippetBatches, VideoPlan, no_collate
from tsnpipe.stages.features.models import Stream, layer_output, load_model
from tsnpipe.stages.features.snippets import frame_step, snippet_centres, snippet_times
from tsnpipe.stages.features.writers import write_video
from tsnpipe.stages.threads import start_loader_worker
from tsnpipe.stages.train.batches import DeviceBatches
from tsnpipe.stages.train.clips import clip_views
from tsnpipe.stages.train.transforms import video_views

CPU_BATCH = 32  # snippets per forward pass on the CPU
GPU_BATCH = 512  # on a GPU: ResNet-50 at 224 under bf16 takes ~16 MiB a snippet with margin


@dataclass(frozen=True)
class Spacing:
    """How far apart snippets are: `every` extracted frames, `interval` seconds, or (both None) 16 source frames."""

    interval: float | None = None
    every: int | None = None

    def describe(self) -> str:
        if self.every is not None:
            return f"every {self.every} extracted frames"
        if self.interval is not None:
            return f"every {self.interval:g} s"
        return "every 16 frames at the video's own rate (mmaction2)"


@dataclass(frozen=True)
class VideoFacts:
    """What the frames stage recorded of a video: its extracted frames, their rate, the source's rate."""

    frames: int
    fps: float
    source_fps: float | None = None


def plan_video(video_id: str, facts: VideoFacts, spacing: Spacing) -> VideoPlan:
    """The snippet centres of one video; a sentence when they cannot be placed."""
    if not facts.frames or facts.frames < 1:
        raise TsnpipeError(f"Video {video_id!r} has no frames; run `tsnpipe extract-frames` for it again.")
    try:
        step = frame_step(facts.fps, spacing.interval, spacing.every, facts.source_fps)
    except ValueError:
        raise TsnpipeError(f"The frame rate of video {video_id!r} is unknown (the frames manifest has no src_fps), so "
                           "16 of its frames cannot be placed; give --interval SECONDS or --every N.") from None
    centres, short = snippet_centres(int(facts.frames), step)
    return VideoPlan(video_id, np.asarray(centres, dtype=np.int32), short)


def stream_inputs(stream: Stream, pieces: list[tuple[int, torch.Tensor]], crops: int, device: torch.device,
                  rows: int) -> torch.Tensor:
    """Model input of every view of these pieces' snippets, [snippets x crops, ...] on `device`, padded with zeros
    to `rows`."""
    p = stream.params
    views = []
    for snippets, stack in pieces:
        stack = stack.to(device, non_blocking=True)
        if p.arch == "tsn":
            cut = video_views([stack], p.modality, snippets, p.length, p.size, crops)[0]  # [crops, n, ch, S, S]
        else:
            cut = clip_views(stack, p.modality, snippets, p.size, crops)  # [crops, n, C, T, S, S]
        views.append(cut.transpose(0, 1))
    inputs = torch.cat(views).flatten(0, 1)
    if len(inputs) < rows:  # the same shape every pass (see the module's docstring)
        inputs = torch.cat([inputs, inputs.new_zeros(rows - len(inputs), *inputs.shape[1:])])
    if p.arch == "tsn" and p.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs


def prepare_batch(items: list, device: torch.device, streams: list[Stream], crops: int, batch: int) -> tuple:
    """(model input per stream, the batch's items) on `device`; `DeviceBatches` runs it one batch ahead on CUDA."""
    good = [(piece.stop - piece.start, stacks) for piece, stacks in items if not isinstance(stacks, str)]
    if not good:
        return [], items
    inputs = [stream_inputs(stream, [(n, stacks[position]) for n, stacks in good], crops, device, batch * crops)
              for position, stream in enumerate(streams)]
    return inputs, items


def stream_features(stream: Stream, inputs: torch.Tensor, sizes: list[int], crops: int, layer: str,
                    device: torch.device, dtype: torch.dtype | None) -> list[np.ndarray]:
    """Per piece (of `sizes` snippets), its snippets' features [n, D] (float32, crops averaged)."""
    from tsnpipe.stages.train.loop import autocast

    with autocast(device, dtype):
        out = layer_output(stream.model, inputs, layer)[:sum(sizes) * crops]
    out = out.view(-1, crops, out.shape[-1]).mean(dim=1).cpu().numpy()
    return np.split(out, np.cumsum(sizes)[:-1])


def extract_videos(
    jobs: list[tuple[str, Path]], facts: dict[str, VideoFacts], streams: list[Stream], spacing: Spacing, layer: str,
    crops: int, fmt: str, store: str | Path, device: torch.device, dtype: torch.dtype | None = None,
    batch: int | None = None, workers: int = 0,
) -> Iterator[tuple[int, dict | Exception]]:
    """Features of every (video id, output folder) job; yields (job index, row facts or the exception) per video."""
    plans, outs = [], []
    for index, (video_id, out_dir) in enumerate(jobs):
        try:
            plans.append(plan_video(video_id, facts[video_id], spacing))
            outs.append((index, Path(out_dir), facts[video_id]))
        except Exception as error:
            yield index, error
    if not plans:
        return
    for stream in streams:
        if stream.model is None:
            stream.model = load_model(stream, device)
    batch = batch or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)
    dataset = SnippetBatches(store, plans, [stream.params for stream in streams], batch)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, collate_fn=no_collate, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False,
                                         worker_init_fn=start_loader_worker if workers else None)
    prepare = functools.partial(prepare_batch, streams=streams, crops=crops, batch=batch)
    parts: dict[int, list[list[np.ndarray]]] = {}
    errors: dict[int, str] = {}
    for inputs, items in DeviceBatches(loader, device, prepare):
        good = [piece for piece, stacks in items if not isinstance(stacks, str)]
        for piece, stacks in items:
            if isinstance(stacks, str):
                errors.setdefault(piece.video, stacks)
        sizes = [piece.stop - piece.start for piece in good]
        for position, (stream, stream_input) in enumerate(zip(streams, inputs)):
            for piece, array in zip(good, stream_features(stream, stream_input, sizes, crops, layer, device, dtype)):
                if piece.video not in errors:
                    parts.setdefault(piece.video, [[] for _ in streams])[position].append(array)
        for piece, _ in items:
            plan = plans[piece.video]
            if piece.stop < len(plan.centres):
                continue
            index, out_dir, video = outs[piece.video]
            chunks = parts.pop(piece.video, None)
            if piece.video in errors:
                yield index, TsnpipeError(errors.pop(piece.video))
                continue
            try:
                yield index, finish_video(plan, chunks, streams, video, spacing, layer, crops, fmt, out_dir)
            except Exception as error:  # a full disk, a bad folder: this video's row says so
                yield index, error


def finish_video(plan: VideoPlan, chunks: list[list[np.ndarray]], streams: list[Stream], video: VideoFacts,
                 spacing: Spacing, layer: str, crops: int, fmt: str, out_dir: Path) -> dict:
    """Write one video's features and return the facts of its row."""
    features = {stream.name: np.concatenate(parts).astype(np.float32) for stream, parts in zip(streams, chunks)}
    times = np.asarray(snippet_times(plan.centres.tolist(), video.fps), dtype=np.float64)
    interval = frame_step(video.fps, spacing.interval, spacing.every, video.source_fps) / video.fps
    attrs = {stream.name: file_attrs(stream, layer, interval, crops) for stream in streams}
    write_video(out_dir, features, times, fmt, attrs)
    return {"snippets": len(plan.centres), "short": plan.short, "interval_s": round(interval, 6),
            "dim": int(sum(array.shape[1] for array in features.values()))}


def file_attrs(stream: Stream, layer: str, interval: float, crops: int) -> dict:
    """The attributes of a stream's dataset: where its numbers came from and how its snippets were made."""
    facts = stream.describe()
    facts["checkpoint"], facts["checkpoint_hash"], facts["crop_size"] = facts.pop("source"), facts.pop("hash"), facts.pop("size")
    return {**facts, "layer": layer, "interval_s": interval, "crops": crops}
