"""TSN training and test throughput, rgb and flow: the model's own limit, the real data pipeline, the test protocol.

Prints one JSON object with, per modality (`--modalities rgb,flow`):
- model_clips_per_s: training clips/s (one clip = one video's K snippets) on random tensors already on
  the device: what the model, optimizer and mixed precision allow;
- pipeline_clips_per_s: training clips/s on real pictures read by DataLoader workers (uint8 crops),
  copied and normalised on the device one batch ahead (`DeviceBatches`); `ratio` = pipeline / model
  (1.0: the data keeps up);
- loader_clips_per_s: the same data path alone, up to normalised clips on the device, no model;
- test_videos_per_s: the test protocol (`--test-snippets` x `--test-crops` views per video, videos per
  forward pass sized to the device unless `--test-batch`), timed on a second pass after a warm-up;
- test_model_videos_per_s: the same forward passes alone on random views on the device (TSN): the ceiling;
- test_bf16_vs_fp32: with autocast on, the largest score difference between a bf16-backbone run and
  a full-fp32 run of the same test videos, absolute and relative to the largest fp32 score, and the share
  of videos whose top-1 class is the same; test_fp16_vs_fp32 the same for fp16 autocast (CUDA).
- per_worker (`--per-worker`, TSN, CPU-measurable, no model): what one DataLoader worker makes on one core
  (torch and OpenCV at one thread, as in a worker): flow training clips/s from the folders and from LMDB
  stores in the flow layouts `images` (each flow image's JPEG bytes) and `pairs` (one LZ4 array per pair),
  `pairs_vs_images` their ratio; the seconds and bytes of packing the store in each layout; and test videos/s
  (the `--test-snippets` pictures of a video read whole,
  as a test worker hands them over) per layout. Best of `--repeats`, the layouts taking turns.
`--gpu-decode` (TSN) is `train --gpu-decode`: the workers read JPEG bytes and the device decodes a whole
batch with one torchvision.io.decode_jpeg call (nvjpeg on CUDA), cropping and normalising there.

Data: the bundled sample clips at 10 fps, short side 256, and flow images made from them with OpenCV's
DIS (ultrafast) quantised and written as tsnpipe stores TV-L1 (JPEG, +-20): the loader's cost depends
on the number and size of the JPEGs, not on how the motion was estimated. `--workdir` reads a real
workdir or packed store instead. `--device cpu` gives the CPU figures. A machine without ffmpeg (such
as the GPU image) reads a sample workdir made elsewhere with `--prepare DIR`, then `--workdir DIR`.

    python benchmarks/train_throughput.py                      # the GPU goal: ResNet-50, 8 segments, 224, batch 32
    python benchmarks/train_throughput.py --arch r2plus1d_18 --test-snippets 10 --test-crops 3   # 16x112x112 clips
    python benchmarks/train_throughput.py --device cpu --backbone resnet18 --batch 2 --segments 2 --size 112 \\
        --steps 2 --test-snippets 3 --test-crops 10 --test-videos 2
    python benchmarks/train_throughput.py --per-worker --repeats 5     # the loader per worker, both flow layouts
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from tsnpipe.stages.scores.evaluate import score_videos, video_scores, videos_per_pass
from tsnpipe.stages.flow.images import write_flow_pair
from tsnpipe.stages.flow.params import FlowParams
from tsnpipe.stages.store.reader import open_reader
from tsnpipe.stages.models import ARCHS
from tsnpipe.stages.train.batches import DeviceBatches, as_channels_last, prepare_clips, prepare_ready
from tsnpipe.stages.train.clips import ClipDataset
from tsnpipe.stages.train.decode import EncodedSnippets, prepare_encoded
from tsnpipe.stages.train.data import SnippetDataset, available_cores, default_workers, make_loader
from tsnpipe.stages.train.loop import autocast, autocast_dtype, build_model, optimizer_groups, to_device
from tsnpipe.stages.train.model import input_channels
from tsnpipe.stages.train.recipe import make_params

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"
CLASSES = 101


def sample_workdir(root: Path) -> Path:
    """The bundled clips as 10 fps frames at short side 256, and flow images of consecutive frames."""
    from tsnpipe.stages.frames import FrameParams, extract_video, find_videos  # needs ffmpeg-python: only here

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    for video_id, source in find_videos(SAMPLES):
        frames_dir = root / "frames" / video_id
        extract_video(source, frames_dir, FrameParams(short_side=256))
        grey = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in sorted(frames_dir.glob("img_*.jpg"))]
        flow_dir = root / "flow" / video_id
        flow_dir.mkdir(parents=True, exist_ok=True)
        for index in range(len(grey) - 1):
            write_flow_pair(flow_dir, index, dis.calc(grey[index], grey[index + 1], None), FlowParams())
    return root


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless(batches):
    while True:
        yield from batches


def train_steps(model, batches, optimizer, device, dtype, channels_last, steps: int) -> float:
    """Clips per second over `steps` training steps (after one warm-up step) on an iterator of batches."""
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for step in range(steps + 1):
        clips, labels = next(batches)
        clips, labels = to_device(clips, device, channels_last), labels.to(device, non_blocking=True)
        with autocast(device, dtype):
            loss = loss_fn(model(clips).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 0:
            synchronize(device)
            start = time.perf_counter()
        else:
            seen += len(labels)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def synthetic_batches(batch: int, segments: int, channels: int, size: int, device: torch.device, params=None):
    if params is not None and params.arch != "tsn":  # one clip [channels, T, S, S] per video
        clips = torch.randn(batch, 1, channels, params.clip_len, size, size, device=device)
    else:
        clips = torch.randn(batch, segments, channels, size, size, device=device)
    labels = torch.randint(CLASSES, (batch,), device=device)
    while True:
        yield clips, labels


def loader_rate(batches, device: torch.device, steps: int) -> float:
    """Clips per second of the data path alone, up to clips on the device (after one warm-up batch)."""
    next(batches)
    synchronize(device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        clips, _ = next(batches)
        seen += len(clips)
    synchronize(device)
    return seen / (time.perf_counter() - start)


def measure(modality: str, args, store: Path, device: torch.device) -> dict:
    """Every figure of one modality."""
    clip_model = args.arch != "tsn"
    length = 1 if modality == "rgb" or clip_model else args.length
    params = make_params(
        modality, arch=args.arch, backbone=args.backbone, pretrained="none", segments=args.segments,
        size=args.size if not clip_model else None, length=length, channels_last=args.channels_last and not clip_model,
        clip_len=args.clip_len,
    )
    size, channels_last = params.size, params.channels_last
    model = build_model(params, CLASSES, "none").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(optimizer_groups(model, params), lr=1e-4, momentum=0.9)
    dtype = autocast_dtype(device, args.amp)
    channels = 2 if clip_model and modality == "flow" else 3 if clip_model else input_channels(modality, length)
    figures = {"length": length, "size": size}
    figures["model_clips_per_s"] = train_steps(
        model, synthetic_batches(args.batch, args.segments, channels, size, device, params), optimizer, device, dtype,
        channels_last, args.steps,
    )

    reader = open_reader(store)
    ids = reader.video_ids()
    counts = [reader.count(video_id, "flow_x" if modality == "flow" else "rgb") for video_id in ids]
    labels = [index % CLASSES for index in range(len(ids))]
    repeat = max(1, -(-args.batch * (args.steps + 1) // len(ids)))  # enough videos for every step
    if clip_model:
        train_set = ClipDataset(store, ids * repeat, labels * repeat, counts * repeat, modality, params.clip_len, 1, size)
        prepare = prepare_ready
    elif args.gpu_decode:  # the workers read JPEG bytes, the device decodes (train --gpu-decode)
        train_set = EncodedSnippets(
            store, ids * repeat, labels * repeat, counts * repeat, modality, args.segments, length, size, mode="train",
        )
        prepare = functools.partial(
            prepare_encoded, modality=modality, segments=args.segments, length=length, size=size, train=True,
            channels_last=channels_last,
        )
    else:
        train_set = SnippetDataset(
            store, ids * repeat, labels * repeat, counts * repeat, modality, args.segments, length, size, mode="train",
        )
        prepare = functools.partial(
            prepare_clips, modality=modality, segments=args.segments, length=length, channels_last=channels_last,
        )
    loader = make_loader(train_set, args.batch, shuffle=True, workers=args.workers, drop_last=True, pin=device.type == "cuda")
    batches = endless(DeviceBatches(loader, device, prepare))
    figures["pipeline_clips_per_s"] = train_steps(model, batches, optimizer, device, dtype, channels_last, args.steps)
    figures["ratio"] = figures["pipeline_clips_per_s"] / figures["model_clips_per_s"]
    figures["loader_clips_per_s"] = loader_rate(endless(DeviceBatches(loader, device, prepare)), device, args.steps)
    so_far(modality, figures)

    videos = (ids * -(-args.test_videos // len(ids)))[: args.test_videos]
    video_counts = [counts[ids.index(video_id)] for video_id in videos]
    test_set = ClipDataset(
        store, videos, [0] * len(videos), video_counts, modality, params.clip_len, 1, size, mode="test",
        clips=args.test_snippets, crops=args.test_crops,
    ) if clip_model else SnippetDataset(
        store, videos, [0] * len(videos), video_counts, modality, args.test_snippets, length, size, mode="test",
        crops=args.test_crops,
    )
    score = functools.partial(
        score_videos, model, test_set, device, "raw", args.test_batch, args.workers, progress=False,
        channels_last=channels_last,
    )
    score(dtype=dtype)  # warm-up: worker start-up, cuDNN's choice of kernels
    mixed, figures["test_videos_per_s"], _ = score(dtype=dtype)
    so_far(modality, figures)  # before the fp32 pass, the slowest
    if not clip_model:
        figures["test_model_videos_per_s"] = test_model_rate(model, test_set, device, dtype, channels, channels_last)
    if dtype is not None:
        full, _, _ = score(dtype=None)
        figures["test_bf16_vs_fp32"] = score_difference(mixed, full)
        so_far(modality, figures)
        if device.type == "cuda":  # what half precision with a longer significand would give
            figures["test_fp16_vs_fp32"] = score_difference(score(dtype=torch.float16)[0], full)
            so_far(modality, figures)
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in figures.items()}


def per_worker(args, workdir: Path, root: Path) -> dict:
    """Clips (training) and videos (test) per second that one loader worker makes, per store and flow layout."""
    from tsnpipe.stages.store.pack import pack_videos

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    folders = open_reader(workdir)
    ids = folders.video_ids()
    stores, figures = {"folders": workdir}, {"pack": {}}
    for layout in ("images", "pairs"):
        stores[f"lmdb_{layout}"] = root / f"{layout}.lmdb"
        start = time.perf_counter()
        facts = pack_videos(workdir, stores[f"lmdb_{layout}"], "lmdb", ids, flow_layout=layout)
        figures["pack"][layout] = {"seconds": round(time.perf_counter() - start, 2), "videos": len(facts),
                                   "flow_pairs": sum(fact["flow_pairs"] for fact in facts),
                                   "bytes": sum(fact["bytes"] for fact in facts)}
    for modality, mode, segments in (("flow", "train", args.segments), ("flow", "test", args.test_snippets),
                                     ("rgb", "test", args.test_snippets)):
        length = args.length if modality == "flow" else 1
        kind = "flow_x" if modality == "flow" else "rgb"
        counts = [folders.count(video_id, kind) for video_id in ids]
        items = max(args.batch, len(ids))
        sets = {name: SnippetDataset(store, ids, [0] * len(ids), counts, modality, segments, length, args.size,
                                     mode=mode) for name, store in stores.items()}
        best = dict.fromkeys(sets, 0.0)
        for _ in range(args.repeats):
            for name, dataset in sets.items():
                dataset[(0, 0, 0)]  # open the store
                start = time.perf_counter()
                dataset.collate([dataset[(index % len(ids), 1, index)] for index in range(items)])
                best[name] = max(best[name], items / (time.perf_counter() - start))
        unit = "clips_per_s" if mode == "train" else "videos_per_s"
        entry = {f"{name}_{unit}": round(rate, 2) for name, rate in best.items()}
        if modality == "flow":
            entry["pairs_vs_images"] = round(best["lmdb_pairs"] / best["lmdb_images"], 3)
        figures[f"{modality}_{mode}"] = {"snippets": segments, "length": length, **entry}
        so_far("per_worker", figures)
    figures["test_first_pass_s"] = first_pass(args, stores["lmdb_images"], ids, folders)
    return figures


def first_pass(args, store: Path, ids: list[str], folders) -> dict:
    """Seconds from the start of a flow test to its first pass of `--test-batch` (default 8) videos with 2 workers:
    each worker reading whole passes (as before) against the passes grouped from single videos (`VideoBatches`)."""
    from tsnpipe.stages.train.batches import VideoBatches

    videos, workers = args.test_batch or 8, 2
    ids = (ids * -(-4 * videos // len(ids)))[: 4 * videos]
    counts = [folders.count(video_id, "flow_x") for video_id in ids]
    dataset = SnippetDataset(store, ids, [0] * len(ids), counts, "flow", args.test_snippets, args.length, args.size,
                             mode="test")
    ways = {"whole_passes_per_worker": lambda: make_loader(dataset, videos, False, workers, shard=False, pin=False),
            "single_videos_grouped": lambda: VideoBatches(make_loader(dataset, 1, False, workers, shard=False, pin=False,
                                                                      prefetch=-(-2 * videos // workers)), videos)}
    best = {}
    for _ in range(args.repeats):
        for name, build in ways.items():
            start = time.perf_counter()
            next(iter(build()))
            best[name] = min(best.get(name, float("inf")), round(time.perf_counter() - start, 3))
    return {"videos_per_pass": videos, "workers": workers, **best}


def score_difference(mixed: np.ndarray, full: np.ndarray) -> dict:
    """The largest score difference, absolute and relative to the largest fp32 score, and how many videos keep
    their top-1 class."""
    difference = float(np.abs(mixed - full).max())
    relative = difference / float(np.abs(full).max())
    same_top1 = float((mixed.argmax(axis=1) == full.argmax(axis=1)).mean())
    return {"max_abs": difference, "relative": relative, "within_1e-3": relative <= 1e-3, "same_top1": same_top1}


@torch.no_grad()
def test_model_rate(model, test_set, device: torch.device, dtype, channels: int, channels_last: bool) -> float:
    """Videos per second of the test's forward passes alone, on random views already on the device, as many
    videos per pass as the test takes: the test protocol's ceiling."""
    views_per_video = test_set.crops * test_set.segments
    batch = videos_per_pass(device, views_per_video, test_set.size) if device.type == "cuda" else 1
    views = torch.randn(batch, test_set.crops, test_set.segments, channels, test_set.size, test_set.size, device=device)
    if channels_last:
        views = as_channels_last(views)
    model.eval()
    passes = 3
    for step in range(passes + 1):
        with autocast(device, dtype):
            video_scores(model, views)
        if step == 0:
            synchronize(device)
            start = time.perf_counter()
    synchronize(device)
    return batch * passes / (time.perf_counter() - start)


def so_far(name: str, figures: dict) -> None:
    """Each figure on stderr as soon as it is measured: a run cut short by a time limit still reports them."""
    print(json.dumps({name: figures}), file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="rgb,flow")
    parser.add_argument("--arch", default="tsn", choices=ARCHS, help="tsn, or a 3D model over --clip-len frame clips")
    parser.add_argument("--clip-len", type=int, default=16, help="3D archs: frames (or flow pairs) per clip")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--length", type=int, default=5, help="flow pairs per snippet")
    parser.add_argument("--size", type=int, default=224, help="TSN's crop (3D archs use their 112)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=None, help="default: the available cores less one")
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workdir", type=Path, default=None, help="a workdir or store to read; default: the sample clips")
    parser.add_argument("--prepare", type=Path, default=None, help="only write the sample workdir to this folder")
    parser.add_argument("--gpu-decode", action="store_true")
    parser.add_argument("--test-snippets", type=int, default=25)
    parser.add_argument("--test-crops", type=int, default=10, choices=(1, 3, 10))
    parser.add_argument("--test-videos", type=int, default=256, help="videos of each test pass (the sample "
                        "clips repeated): enough that the loader's start-up is not what is timed")
    parser.add_argument("--test-batch", type=int, default=None, help="videos per forward pass; default: sized to the device")
    parser.add_argument("--per-worker", action="store_true", help="only the loader's figures per worker (no model)")
    parser.add_argument("--repeats", type=int, default=3, help="--per-worker: best of this many timings")
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps({"prepared": str(sample_workdir(args.prepare))}))
        return
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = {}
    with tempfile.TemporaryDirectory() as temp:
        store = args.workdir or sample_workdir(Path(temp))
        if args.per_worker:
            results["per_worker"] = per_worker(args, Path(store), Path(temp))
        for modality in args.modalities.split(",") if not args.per_worker else []:
            results[modality] = measure(modality, args, store, device)
    print(json.dumps({
        "machine": {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cores": available_cores(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "config": {"arch": args.arch, "backbone": args.backbone, "segments": args.segments, "size": args.size, "batch": args.batch,
                   "steps": args.steps, "workers": default_workers() if args.workers is None else args.workers,
                   "amp": str(autocast_dtype(device, args.amp)), "channels_last": args.channels_last,
                   "gpu_decode": args.gpu_decode, "test_views": f"{args.test_snippets} snippets x {args.test_crops} crops",
                   "test_videos": args.test_videos},
        **results,
    }, indent=2))


if __name__ == "__main__":
    main()
