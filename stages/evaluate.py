"""The TSN test protocol: score every test video with N snippets x crops and write a score file.

Per video (Caffe TSN `tools/eval_net.py`, tsn-pytorch `test_models.py`): N snippets (default 25) start
at N evenly spaced segment centres; each is cut into 1 (centre), 3 (along the longer side) or 10
(4 corners + centre, and their mirror images) crops of the training crop size from the pictures
as stored (short side 256 or 340x256), and the model scores every snippet x crop. The video's
score is the mean over crops, then over snippets, of the raw class scores (the paper; "softmax"
averages probabilities instead, as mmaction2 1.x does); the rule is recorded in the score file.
A 3D model's views are clips (R(2+1)D paper: 10 evenly spaced clips x 3 crops of the 128x171 resize,
`tsnpipe.stages.train.clips`), scored through the same `snippet_scores` and averaged the same way.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tsnpipe.stages.scores import accuracies, write_scores
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.clips import dataset_for
from tsnpipe.stages.train.data import SnippetDataset, make_loader, read_split
from tsnpipe.stages.train.loop import autocast, autocast_dtype, build_model, pick_device
from tsnpipe.stages.train.recipe import params_from_dict
from tsnpipe.stages.val_split import read_validation

AVERAGES = ("raw", "softmax")


@torch.no_grad()
def video_scores(model, views: torch.Tensor, average: str = "raw") -> torch.Tensor:
    """Scores of videos from their views [B, crops, N, C, H, W]: mean over crops, then snippets -> [B, classes]."""
    batch, crops, snippets = views.shape[:3]
    scores = model.snippet_scores(views.flatten(0, 2)).float().view(batch, crops, snippets, -1)
    if average == "softmax":
        scores = scores.softmax(dim=-1)
    return scores.mean(dim=1).mean(dim=1)


def score_videos(
    model, dataset: SnippetDataset, device: torch.device, average: str = "raw", batch: int = 1, workers: int = 2,
    dtype: torch.dtype | None = None, progress: bool = True,
) -> tuple[np.ndarray, float]:
    """Scores [N, classes] of every video of a test-mode dataset, and the videos per second."""
    model.eval()
    loader = make_loader(dataset, batch, shuffle=False, workers=workers, shard=False)
    start, scores = time.perf_counter(), []
    for views, _ in tqdm(loader, desc="test", unit="batch", disable=not progress, leave=False):
        with autocast(device, dtype):
            scores.append(video_scores(model, views.to(device, non_blocking=True), average).cpu().numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(scores).astype(np.float32), len(dataset) / max(seconds, 1e-9)


def score_split(
    checkpoint: str | Path, out: str | Path, store: str | Path | None = None, split_dir: str | Path | None = None,
    segments: int = 25, crops: int = 10, average: str = "raw", device: str | None = None, batch: int = 1,
    workers: int = 2, amp: bool | None = None, progress: bool = True, subset: str = "test",
) -> dict:
    """Score the split's test videos with a checkpoint, write the score file `out` and `out`.json.

    `store` and `split_dir` default to the ones the checkpoint was trained on; `subset` "val" scores the
    split's val.csv instead of its test list (validation scores for a fusion weight search). For a 3D
    checkpoint `segments` counts clips. Returns the accuracies
    (top1, top5, mean_class as fractions), the number of videos, videos/s and the two paths written.
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
    if subset == "val":
        test_table = read_validation(split_dir, len(class_names))
    torch_device = pick_device(device)
    model = build_model(params, len(state["class_names"]), weights=None)
    model.load_state_dict(state["model"])
    model.to(torch_device)
    dataset = dataset_for(params, test_table, "test", store, segments, crops)
    scores, videos_per_s = score_videos(
        model, dataset, torch_device, average, batch, workers, autocast_dtype(torch_device, amp), progress,
    )
    labels = test_table["label"].to_numpy(dtype=np.int64)
    aggregation = {
        "modality": params.modality, "segments": segments, "crops": crops, "average": average,
        "order": "crops then snippets", "crop_size": params.size, "length": params.length,
    }
    source = {
        "checkpoint": str(Path(checkpoint).resolve()), "epoch": int(state["epoch"]), "split_dir": str(split_dir),
        "store": str(store), "backbone": params.backbone, "arch": params.arch, "subset": subset,
    }
    if params.arch != "tsn":
        aggregation.update(clip_len=params.clip_len, stride=params.stride, order="crops then clips")
    out = write_scores(out, test_table["video_id"].tolist(), labels, class_names, scores, aggregation, source)
    result = {**accuracies(scores, labels), "videos": len(labels), "videos_per_s": videos_per_s}
    report = out.with_name(out.stem + ".json")
    temp = report.with_name(f".{report.name}.tmp")
    temp.write_text(json.dumps({**result, "scores": str(out), **aggregation}, indent=2) + "\n")
    os.replace(temp, report)
    return {**result, "scores": out, "report": report}
