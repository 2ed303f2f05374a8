"""The TSN test protocol: score every test video with N snippets x crops and write a score file.

Per video (Caffe TSN `tools/eval_net.py`, tsn-pytorch `test_models.py`): N snippets (default 25) start
at N evenly spaced segment centres; each is cut into 1 (centre), 3 (along the longer side) or 10
(4 corners + centre, and their mirror images) crops of the training crop size from the pictures
as stored (short side 256 or 340x256), and the model scores every snippet x crop. The video's
score is the mean over crops, then over snippets, of the raw class scores (the paper; "softmax"
averages probabilities instead, as mmaction2 1.x does); the rule is recorded in the score file.
The run's `protocol` (`protocol.test_views`) may set other defaults: mmaction2's Something-Something
configs test the training's snippets, V1 10 crops with the mirrored views averaged, V2 3 crops of 256.
A 3D model's views are clips (10 evenly spaced clips, as the R(2+1)D paper averages 10, x 3 crops of the
128x171 resize, mmaction2's ThreeCrop; `tsnpipe.stages.train.clips`), scored through the same `snippet_scores` and averaged the same way.

Speed: loader workers each read one video at a time and hand over its 25 (x snippet length) pictures whole
as uint8 (pinned on CUDA), reading up to two passes' worth of videos ahead; the views
are cut, flipped and normalised on the device (`transforms.video_views`), several videos go through
one forward pass (`videos_per_pass`: up to 16 on a GPU, as memory allows), the next batch is copied
and prepared while the model runs (`batches.DeviceBatches`), and scores stay on the device until the
end. The backbone may run under fp16 or bf16 autocast (`--precision`; fp16 by default on a GPU, where it
stayed within 5e-5 of fp32 at bf16's speed while bf16 differed by 3.4e-3; fp32 on the CPU); the classifier
and the averages run in fp32. A video whose reduced-precision scores are not all finite (an fp16 overflow)
is scored again in fp32 from the same views, and the report counts those videos.
"""

from __future__ import annotations

import functools
from dataclasses import replace
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from tsnpipe.stages.progress import progress_bar
from tsnpipe.stages.scores.average_precision import dataset_map_over, per_class_average_precision
from tsnpipe.stages.scores.files import check_split_classes, metrics, write_scores
from tsnpipe.stages.train.batches import DeviceBatches, VideoBatches, prepare_ready, prepare_views
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.clips import dataset_for
from tsnpipe.stages.train.data import (SnippetDataset, default_workers, make_loader, read_split, split_source,
                                      split_targets)
from tsnpipe.stages.train.flip import FlipRule, mirrored_views
from tsnpipe.stages.train.loop import autocast, build_model, pick_device
from tsnpipe.stages.train.recipe import params_from_dict
from tsnpipe.stages.splits.validation import read_validation

AVERAGES = ("raw", "softmax")
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
MAX_VIDEOS_PER_PASS = 16
VIEW_BYTES_224 = 16 * 2**20  # device memory a 224 x 224 view may take in a ResNet-50 forward pass, with margin


def videos_per_pass(device: torch.device, views_per_video: int, size: int = 224) -> int:
    """Videos per forward pass: 1 on the CPU; on a GPU as many as half its free memory holds, at most 16."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_video = views_per_video * VIEW_BYTES_224 * (size / 224) ** 2
    return max(1, min(MAX_VIDEOS_PER_PASS, int(free / 2 // per_video)))


def precision_dtype(device: torch.device, precision: str | None) -> torch.dtype | None:
    """The autocast dtype of a test precision (None: fp32); no precision given: fp16 on a GPU, fp32 on the CPU."""
    if precision is None:
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return PRECISIONS[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    return next(name for name, value in PRECISIONS.items() if value == dtype)


@torch.no_grad()
def finite_or_fp32(model, views: torch.Tensor, scores: torch.Tensor, average: str = "raw",
                   flip_rule: FlipRule | None = None) -> tuple[torch.Tensor, int]:
    """(scores, how many videos were redone): every video whose scores are not all finite scored again from its
    views in fp32. One device-to-host read of a flag per batch: small beside a batch's forward passes."""
    return refill_not_finite(scores, lambda bad: video_scores(model, views[bad], average, flip_rule))


def refill_not_finite(outputs: torch.Tensor, recompute) -> tuple[torch.Tensor, int]:
    """(outputs, how many rows were redone): each row of `outputs` (a video's scores, a snippet's features) that is
    not all finite replaced by `recompute(bad)`, the fp32 outputs of the rows the boolean mask `bad` picks."""
    bad = ~torch.isfinite(outputs.flatten(1)).all(dim=1)
    redone = int(bad.sum())
    if redone:
        outputs = outputs.clone()
        outputs[bad] = recompute(bad).to(outputs.dtype)
    return outputs, redone


@torch.no_grad()
def video_scores(model, views: torch.Tensor, average: str = "raw", flip_rule: FlipRule | None = None) -> torch.Tensor:
    """Scores of videos from their views [B, crops, N, C, H, W]: mean over crops, then snippets -> [B, classes].

    With a flip rule other than "on", the mirrored crops of a 10-crop test are dropped or read with the
    left/right classes swapped (`train.flip`)."""
    batch, crops, snippets = views.shape[:3]
    scores = model.snippet_scores(views.flatten(0, 2)).float().view(batch, crops, snippets, -1)
    if flip_rule is not None:
        scores = flip_rule.test_views(scores, mirrored_views(crops))
    if average == "softmax":
        scores = scores.softmax(dim=-1)
    return scores.mean(dim=1).mean(dim=1)


def score_videos(
    model, dataset: SnippetDataset, device: torch.device, average: str = "raw", batch: int | None = None,
    workers: int | None = None, dtype: torch.dtype | None = None, progress: bool = True, channels_last: bool = False,
    flip_rule: FlipRule | None = None,
) -> tuple[np.ndarray, float, int]:
    """Scores [N, classes] of every video of a test-mode dataset, the videos per second, and how many videos
    were scored again in fp32 because their scores under `dtype` autocast were not finite.

    `batch` None sizes the videos per forward pass to the device (`videos_per_pass`); `workers` None
    takes one loader worker per available core but one.
    """
    model.eval()
    crops, pin = dataset.crops, device.type == "cuda"
    if isinstance(dataset, SnippetDataset):  # workers read one video each, passes take `batch` (`VideoBatches`)
        batch = batch or videos_per_pass(device, crops * dataset.segments, dataset.size)
        prepare = functools.partial(
            prepare_views, modality=dataset.modality, segments=dataset.segments, length=dataset.length,
            size=dataset.size, crops=crops, channels_last=channels_last,
        )
        single = make_loader(dataset, 1, shuffle=False, workers=workers, shard=False, pin=pin,
                             prefetch=max(2, -(-2 * batch // max(workers or default_workers(), 1))))
        loader = VideoBatches(single, batch)
    else:  # a 3D model's clip views, made into float input by the workers
        batch, prepare = batch or 1, prepare_ready
        loader = make_loader(dataset, batch, shuffle=False, workers=workers, shard=False, pin=pin)
    start, scores, redone = time.perf_counter(), [], 0
    batches = DeviceBatches(loader, device, prepare)
    for views, _ in progress_bar(batches, enabled=progress, desc="test", unit="batch", leave=False):
        with autocast(device, dtype):
            batch_scores = video_scores(model, views, average, flip_rule)
        if dtype is not None:
            batch_scores, count = finite_or_fp32(model, views, batch_scores, average, flip_rule)
            redone += count
        scores.append(batch_scores)
    scores = torch.cat(scores).cpu().numpy().astype(np.float32)
    seconds = time.perf_counter() - start
    return scores, len(dataset) / max(seconds, 1e-9), redone


def score_split(
    checkpoint: str | Path, out: str | Path, store: str | Path | None = None, split_dir: str | Path | None = None,
    segments: int = 25, crops: int = 10, average: str = "raw", device: str | None = None, batch: int | None = None,
    workers: int | None = None, amp: bool | None = None, progress: bool = True, subset: str = "test",
    precision: str | None = None, crop_size: int | None = None,
) -> dict:
    """Score the split's test videos with a checkpoint, write the score file `out` and `out`.json.

    `store` and `split_dir` default to the ones the checkpoint was trained on; `subset` "val" scores the
    split's val.csv instead of its test list (validation scores for a fusion weight search). For a 3D
    checkpoint `segments` counts clips. `crop_size` defaults to the training crop (`protocol.test_views` gives
    a protocol's); the 10-crop mirrored views count as `FlipRule.for_test` says. `precision`: fp16, bf16 or fp32
    autocast (None: fp16 on a GPU, fp32 on the CPU; `amp`, the older switch, means bf16 or fp32 when no precision
    is given). Returns the accuracies (top1, top5, mean_class as fractions), the number of videos, videos/s, the
    precision, the videos scored again in fp32, and the two paths written.
    """
    if crops not in (1, 3, 10):
        raise ValueError(f"crops must be 1, 3 or 10, not {crops}")
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, not {average!r}")
    state = load_checkpoint(Path(checkpoint))
    params = params_from_dict(state["params"])
    store = Path(store or params.store)
    split_dir = Path(split_dir or params.split_dir)
    _, test_table, class_names = read_split(split_dir)
    check_split_classes(state["class_names"], class_names, checkpoint, split_dir)
    if subset == "val":
        test_table = read_validation(split_dir, len(class_names))
    torch_device = pick_device(device)
    model = build_model(params, len(state["class_names"]), weights=None)
    model.load_state_dict(state["model"])
    model.to(torch_device)
    if params.channels_last:
        model.to(memory_format=torch.channels_last)
    crop_size = crop_size or params.size
    dataset = dataset_for(replace(params, size=crop_size), test_table, "test", store, segments, crops)
    flip_rule = FlipRule.for_test(params, len(class_names))
    if precision is None and amp is not None:
        precision = "bf16" if amp else "fp32"
    dtype = precision_dtype(torch_device, precision)
    scores, videos_per_s, redone = score_videos(
        model, dataset, torch_device, average, batch, workers, dtype, progress, params.channels_last, flip_rule,
    )
    labels = test_table["label"].to_numpy(dtype=np.int64)
    aggregation = {
        "modality": params.modality, "segments": segments, "crops": crops, "average": average,
        "order": "crops then snippets", "crop_size": crop_size, "protocol": params.protocol, "length": params.length,
        "flip": params.flip, **({"mirrored_views": flip_rule.describe()} if crops == 10 else {}),
    }
    source = {
        "checkpoint": str(Path(checkpoint).resolve()), "epoch": int(state["epoch"]), "split_dir": str(split_dir),
        "store": str(store), "backbone": params.backbone, "arch": params.arch, "subset": subset,
        **({"flow_pairs": params.flow_pairs} if params.modality == "flow" else {}),
    }
    if params.arch != "tsn":
        aggregation.update(clip_len=params.clip_len, stride=params.stride, order="crops then clips")
    targets = np.stack(split_targets(test_table, len(class_names))) if params.multi_label else None
    map_over = dataset_map_over(split_source(split_dir))
    if targets is not None:  # the mean the data set's figures use (MMiT: over videos), for fuse and report too
        aggregation["map_over"] = map_over
    out = write_scores(out, test_table["video_id"].tolist(), labels, class_names, scores, aggregation, source, targets)
    result = {**metrics(scores, labels, targets, map_over), "videos": len(labels), "videos_per_s": videos_per_s,
              "precision": precision_name(dtype), "fp32_rescored": redone}
    if targets is not None:  # multi-label: mAP and each class's AP (NaN: no positive video) instead of accuracies
        result["map_over"] = map_over
        result["per_class_ap"] = {name: None if np.isnan(ap) else float(ap)
                                  for name, ap in zip(class_names, per_class_average_precision(scores, targets))}
    report = out.with_name(out.stem + ".json")
    temp = report.with_name(f".{report.name}.tmp")
    temp.write_text(json.dumps({**result, "scores": str(out), **aggregation}, indent=2) + "\n")
    os.replace(temp, report)
    return {**result, "scores": out, "report": report}
