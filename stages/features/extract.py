"""Snippet features of many videos: plan every video, read batches in loader workers, one forward per stream.

Per batch (`inputs.SnippetBatches`: about `batch` snippets, from as many videos as it takes), each stream's
uint8 pictures go to the device whole and are cut there into the test's views (`transforms.video_views` for
TSN: centre crop at the checkpoint's size, or 3 / 10 crops; `clips.clip_views` for 3D models: the 128x171
resize and its crops, resized and normalised by `clips.clip_input`, the rule `test` and `predict` follow:
C3D's Sports-1M input, no antialiasing for weights made without it), and sent through the network
in one forward pass, the backbone under `--precision` autocast (fp16 by default on a GPU, fp32 on the CPU) and
the classifier in fp32 (`tsnpipe test`'s rule); a snippet whose reduced-precision outputs are not all finite
(an fp16 overflow) is computed again in fp32 (`evaluate.refill_not_finite`, test's rule per video), and its
video's row counts it (`fp32_snippets`). On CUDA the copy and view-cutting of the next batch run on a side
stream while the model works on this one (`batches.DeviceBatches`, as in test and training). Features of a
snippet's crops are averaged as `test` averages them (`view_rule`): with the checkpoint's flip `off` the five mirrored views of a 10-crop
are left out; with `swap-labels` a mirrored view's class scores (`--layer scores`) are read with the
left/right classes swapped, and its other layers, which have no classes to swap, are left out. A video is
written (`writers.write_video`) as soon as the batch holding its last snippet is done, and reported then;
its rows go to the manifest one by one, so a kill loses only the videos whose snippets were in flight.

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
from tsnpipe.stages.threads import BudgetedLoader
from tsnpipe.stages.train.batches import DeviceBatches
from tsnpipe.stages.train.clips import clip_input, clip_views
from tsnpipe.stages.train.flip import FlipRule, mirrored_views
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
            cut = clip_views(stack, p.modality, snippets, p.size, crops, **clip_input(p))  # [crops, n, C, T, S, S]
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


@torch.no_grad()
def stream_features(stream: Stream, inputs: torch.Tensor, sizes: list[int], crops: int, layer: str,
                    device: torch.device, dtype: torch.dtype | None) -> tuple[list[np.ndarray], list[int]]:
    """Per piece (of `sizes` snippets), its snippets' features [n, D] (float32, crops averaged as `view_rule` says),
    and how many of its snippets were computed again in fp32 because their `dtype` outputs were not finite."""
    from tsnpipe.stages.scores.evaluate import refill_not_finite
    from tsnpipe.stages.train.loop import autocast

    snippets = sum(sizes)
    with autocast(device, dtype):
        out = layer_output(stream.model, inputs, layer)[:snippets * crops].float()
    views = out.view(snippets, crops, 1, out.shape[-1])  # test's [videos, views, snippets, classes]
    redone = torch.zeros(snippets, dtype=torch.bool)
    if dtype is not None:  # the whole batch again in fp32 (the one shape; see the docstring), its bad snippets kept
        def fp32(bad):
            redone[bad.cpu()] = True
            return layer_output(stream.model, inputs, layer)[:snippets * crops].float().view_as(views)[bad]
        views, _ = refill_not_finite(views, fp32)
    out = view_rule(stream, layer).test_views(views, mirrored_views(crops)).mean(dim=1)[:, 0].cpu().numpy()
    bounds = np.cumsum(sizes)[:-1]
    return np.split(out, bounds), [int(part.sum()) for part in np.split(redone.numpy(), bounds)]


def view_rule(stream: Stream, layer: str) -> FlipRule:
    """What a 10-crop's mirrored views count for: the checkpoint's test rule (`FlipRule.for_test`); with swap-labels,
    only class scores can be swapped back, so the mirrored views of other layers are left out (as `off`)."""
    rule = FlipRule.for_test(stream.params, stream.classes)
    return FlipRule("off") if rule.mode == "swap-labels" and layer != "scores" else rule


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
    loader = BudgetedLoader(dataset, batch_size=None, collate_fn=no_collate, num_workers=workers,
                            pin_memory=device.type == "cuda", persistent_workers=False)
    prepare = functools.partial(prepare_batch, streams=streams, crops=crops, batch=batch)
    parts: dict[int, list[list[np.ndarray]]] = {}
    errors: dict[int, str] = {}
    fp32_redone: dict[int, int] = {}  # per video: snippets (of all streams) computed again in fp32
    for inputs, items in DeviceBatches(loader, device, prepare):
        good = [piece for piece, stacks in items if not isinstance(stacks, str)]
        for piece, stacks in items:
            if isinstance(stacks, str):
                errors.setdefault(piece.video, stacks)
        sizes = [piece.stop - piece.start for piece in good]
        for position, (stream, stream_input) in enumerate(zip(streams, inputs)):
            arrays, redone = stream_features(stream, stream_input, sizes, crops, layer, device, dtype)
            for piece, array, count in zip(good, arrays, redone):
                if piece.video not in errors:
                    parts.setdefault(piece.video, [[] for _ in streams])[position].append(array)
                    fp32_redone[piece.video] = fp32_redone.get(piece.video, 0) + count
        for piece, _ in items:
            plan = plans[piece.video]
            if piece.stop < len(plan.centres):
                continue
            index, out_dir, video = outs[piece.video]
            chunks, redone = parts.pop(piece.video, None), fp32_redone.pop(piece.video, 0)
            if piece.video in errors:
                yield index, TsnpipeError(errors.pop(piece.video))
                continue
            try:
                facts = finish_video(plan, chunks, streams, video, spacing, layer, crops, fmt, out_dir, dtype)
                yield index, {**facts, "fp32_snippets": redone}
            except Exception as error:  # a full disk, a bad folder: this video's row says so
                yield index, error


def finish_video(plan: VideoPlan, chunks: list[list[np.ndarray]], streams: list[Stream], video: VideoFacts,
                 spacing: Spacing, layer: str, crops: int, fmt: str, out_dir: Path,
                 dtype: torch.dtype | None = None) -> dict:
    """Write one video's features and return the facts of its row."""
    features = {stream.name: np.concatenate(parts).astype(np.float32) for stream, parts in zip(streams, chunks)}
    times = np.asarray(snippet_times(plan.centres.tolist(), video.fps), dtype=np.float64)
    interval = frame_step(video.fps, spacing.interval, spacing.every, video.source_fps) / video.fps
    attrs = {stream.name: file_attrs(stream, layer, interval, crops, dtype) for stream in streams}
    written = write_video(out_dir, features, times, fmt, attrs)
    return {"snippets": len(plan.centres), "short": plan.short, "interval_s": round(interval, 6),
            "dim": int(sum(array.shape[1] for array in features.values())), "bytes": written}


def file_attrs(stream: Stream, layer: str, interval: float, crops: int, dtype: torch.dtype | None = None) -> dict:
    """The attributes of a stream's dataset: where its numbers came from and how its snippets were made."""
    from tsnpipe.stages.scores.evaluate import precision_name

    facts = stream.describe()
    facts["checkpoint"], facts["checkpoint_hash"], facts["crop_size"] = facts.pop("source"), facts.pop("hash"), facts.pop("size")
    return {**facts, "layer": layer, "interval_s": interval, "crops": crops, "precision": precision_name(dtype)}
