"""Classify one new video with trained checkpoints: decode, flow if needed, the test protocol, fusion.

The video is decoded into a temporary work folder with the frame stage (`extract_video`) at the frame
rate and size the checkpoint's training frames used, TV-L1 flow is computed there with the flow stage
(`flow_video`, or `source_flow_video` when the checkpoint's flow paired source frames) when a flow
checkpoint is given, and each checkpoint scores the video exactly as
`tsnpipe test` scores a test video (`SnippetDataset` in test mode and `score_videos`: the same snippet
positions and crops, raw scores averaged over crops then snippets). Several checkpoints are fused as
`tsnpipe fuse` fuses score files: a weighted sum of raw scores (`weighted_sum`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.scores.evaluate import score_videos
from tsnpipe.stages.train.flip import FlipRule
from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.driver import flow_video
from tsnpipe.stages.flow.source_pairs import source_flow_video
from tsnpipe.stages.frames import FrameParams, extract_video
from tsnpipe.stages.scores.fuse import format_weights, weighted_sum
from tsnpipe.stages.scores.files import check_class_order
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.data import SnippetDataset
from tsnpipe.stages.train.loop import autocast_dtype, build_model, pick_device
from tsnpipe.stages.train.recipe import TrainParams, params_from_dict

VIDEO_ID = "video"  # the one video's id inside the temporary work folder


class PredictError(TsnpipeError):
    """Checkpoints or options that cannot classify a video together."""


@dataclass
class Stream:
    """One loaded checkpoint and how its video must be decoded."""

    path: Path
    state: dict
    params: TrainParams
    frames: FrameParams | None = None  # how to decode the video for this checkpoint; set by the caller

    @property
    def class_names(self) -> list[str]:
        return list(self.state["class_names"])


def load_streams(paths: list[Path]) -> list[Stream]:
    """Load every checkpoint (weights_only) and check that they all name the same classes in the same order."""
    streams = []
    for path in paths:
        state = load_checkpoint(Path(path))
        streams.append(Stream(Path(path), state, params_from_dict(state["params"])))
    first = streams[0]
    for other in streams[1:]:
        check_class_order(first.class_names, other.class_names, f"The checkpoint {first.path}", str(other.path),
                          "use checkpoints trained on the same splits")
        if bool(other.params.multi_label) != bool(first.params.multi_label):
            kinds = {True: "multi-label (sigmoid scores)", False: "single-label (softmax scores)"}
            raise PredictError(f"The checkpoint {first.path} is {kinds[bool(first.params.multi_label)]} and "
                               f"{other.path} is {kinds[bool(other.params.multi_label)]}; their scores do not add up: "
                               "fuse checkpoints trained the same way.")
    return streams


def check_weights(weights: tuple[float, ...] | None, count: int) -> tuple[float, ...]:
    """One weight per checkpoint, in their order; all 1 when none are given."""
    if weights is None:
        return (1.0,) * count
    if len(weights) != count:
        raise PredictError(
            f"{len(weights)} weights were given for {count} checkpoints; give one weight per --checkpoint in the "
            f"same order, e.g. --weights {format_weights((1.0,) * count)}."
        )
    return tuple(weights)


def stream_scores(stream: Stream, workspace: Path, segments: int, crops: int, device: torch.device) -> np.ndarray:
    """Raw class scores [C] of the one video in `workspace`, by the test protocol of `tsnpipe test`."""
    params = stream.params
    model = build_model(params, len(stream.class_names), weights=None)
    model.load_state_dict(stream.state["model"])
    model.to(device)
    kind = "flow" if params.modality == "flow" else "frames"
    count = sum(1 for _ in (workspace / kind / VIDEO_ID).glob("flow_x_*.jpg" if kind == "flow" else "img_*.jpg"))
    if count == 0:
        raise PredictError(f"The video gave no {'flow pairs (it has one frame)' if kind == 'flow' else 'frames'}, "
                           "so it cannot be classified; use a longer video.")
    if params.arch == "tsn":
        dataset = SnippetDataset(workspace, [VIDEO_ID], [0], [count], params.modality, segments, params.length,
                                 params.size, "test", crops)
    else:  # a 3D model: `segments` clips
        from tsnpipe.stages.train.clips import ClipDataset, clip_input

        dataset = ClipDataset(workspace, [VIDEO_ID], [0], [count], params.modality, params.clip_len, params.stride,
                              params.size, "test", segments, crops, **clip_input(params))
    scores, _, _ = score_videos(model, dataset, device, "raw", batch=1, workers=0,
                             dtype=autocast_dtype(device, params.amp), progress=False,
                             flip_rule=FlipRule.for_test(params, len(stream.class_names)))
    return scores[0]


def compute_flow(video: Path, workspace: Path, params: FlowParams, frames: FrameParams, device: torch.device) -> None:
    """The video's flow in `workspace`, paired as the checkpoint's training flow was (`params.pairs`)."""
    frames_dir, out_dir = workspace / "frames" / VIDEO_ID, workspace / "flow" / VIDEO_ID
    if params.pairs == "source":
        source_flow_video(video, frames_dir, out_dir, params, frames, device=str(device))
    else:
        flow_video(frames_dir, out_dir, params, device=str(device))


def top_classes(scores: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    """The `top` best classes with their scores, best first (ties keep the class order)."""
    order = np.argsort(-scores, kind="stable")[:top]
    return [{"class": class_names[i], "score": float(scores[i])} for i in order]


def predict_video(
    video: Path, streams: list[Stream], weights: tuple[float, ...], flow_params: FlowParams, segments: int = 25,
    crops: int = 10, device: str | None = None, top: int = 5,
) -> dict:
    """Classify `video` with every stream and fuse their raw scores with `weights`.

    Returns {"video", "classes" (top, best first), "scores" (fused, [C]), "stream_scores", "checkpoints",
    "weights", "timings"}. Raises TsnpipeError when the video cannot be decoded.
    """
    if crops not in (1, 3, 10):
        raise PredictError(f"--crops must be 1, 3 or 10, not {crops}.")
    video = Path(video)
    torch_device = pick_device(device)
    timings = {"decode_s": 0.0, "flow_s": 0.0, "score_s": 0.0}
    per_stream = []
    with tempfile.TemporaryDirectory(prefix="tsnpipe-predict-") as temp:
        workspaces: dict[tuple[FrameParams, str], Path] = {}  # one per frame settings and flow pairing
        for stream in streams:
            key = (stream.frames, stream.params.flow_pairs)
            workspace = workspaces.get(key)
            if workspace is None:
                workspace = workspaces[key] = Path(temp) / f"w{len(workspaces)}"
                start = time.perf_counter()
                extract_video(video, workspace / "frames" / VIDEO_ID, stream.frames)
                timings["decode_s"] += time.perf_counter() - start
            if stream.params.modality == "flow" and not (workspace / "flow" / VIDEO_ID).is_dir():
                start = time.perf_counter()
                compute_flow(video, workspace, replace(flow_params, pairs=stream.params.flow_pairs), stream.frames,
                             torch_device)
                timings["flow_s"] += time.perf_counter() - start
            start = time.perf_counter()
            per_stream.append(stream_scores(stream, workspace, segments, crops, torch_device))
            timings["score_s"] += time.perf_counter() - start
    fused = weighted_sum([s.astype(np.float64) for s in per_stream], weights, softmax=False).astype(np.float32)
    class_names = streams[0].class_names
    return {
        "video": str(video),
        "classes": top_classes(fused, class_names, top),
        "scores": fused,
        "stream_scores": per_stream,
        "class_names": class_names,
        "checkpoints": [str(stream.path) for stream in streams],
        "weights": list(weights),
        "timings": timings,
    }
