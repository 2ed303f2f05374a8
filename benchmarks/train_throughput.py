"""TSN training and test throughput: the model's own limit, the real data pipeline, and the test protocol.

Prints one JSON object:
- synthetic: training clips/s (one clip = one video's K snippets) on random tensors already on the
  device: what the model, optimizer and mixed precision allow;
- pipeline: training clips/s on real frames (the bundled sample clips decoded at 10 fps, short side
  256, or the frames of `--workdir`) read through `tsnpipe.stages.store.open_reader` by DataLoader
  workers with the training augmentation; `ratio` = pipeline / synthetic (1.0: the data keeps up);
- loader: clips/s of the data loader alone (read + decode + augment, no model);
- test: videos/s of the test protocol (`--test-snippets` x `--test-crops` views per video).
`--gpu-decode` reads raw JPEG bytes in the workers and decodes them with
torchvision.io.decode_jpeg(device="cuda") in the main process, augmenting on the GPU.

    python benchmarks/train_throughput.py                      # the GPU goal: ResNet-50, 8 segments, 224, batch 32
    python benchmarks/train_throughput.py --device cpu --batch 2 --segments 3 --steps 3 --test-snippets 5 --test-crops 1
    python benchmarks/train_throughput.py --arch r2plus1d_18 --test-snippets 10 --test-crops 3   # a 3D model: 16x112x112 clips

With `--arch` c3d, r3d_18, mc3_18 or r2plus1d_18 one clip is `--clip-len` frames of one video at a
112 crop (`--segments` and `--gpu-decode` are TSN's); test views are `--test-snippets` clips x crops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tsnpipe.stages.evaluate import score_videos
from tsnpipe.stages.frames import FrameParams, extract_video, find_videos
from tsnpipe.stages.models import ARCHS
from tsnpipe.stages.store import open_reader
from tsnpipe.stages.train.clips import ClipDataset
from tsnpipe.stages.train.data import SnippetDataset, make_loader
from tsnpipe.stages.train.loop import autocast, autocast_dtype, build_model, optimizer_groups, to_device
from tsnpipe.stages.train.recipe import make_params
from tsnpipe.stages.train.sampling import snippet_positions, train_starts
from tsnpipe.stages.train.transforms import train_transform

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"


def sample_workdir(root: Path) -> Path:
    """The bundled clips as 10 fps frames at short side 256, the size training reads."""
    for video_id, source in find_videos(SAMPLES):
        extract_video(source, root / "frames" / video_id, FrameParams(short_side=256))
    return root


def train_steps(model, batches, optimizer, device, dtype, channels_last, steps: int) -> float:
    """Clips per second over `steps` training steps (after one warm-up step) on an iterator of batches."""
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, start = 0, None
    for step in range(steps + 1):
        clips, labels = next(batches)
        clips, labels = to_device(clips, device, channels_last), labels.to(device)
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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_batches(batch: int, segments: int, size: int, classes: int, device: torch.device, params=None):
    if params is not None and params.arch != "tsn":  # one clip [3, T, S, S] per video
        clips = torch.randn(batch, 1, 3, params.clip_len, size, size, device=device)
    else:
        clips = torch.randn(batch, segments, 3, size, size, device=device)
    labels = torch.randint(classes, (batch,), device=device)
    while True:
        yield clips, labels


def endless(loader):
    while True:
        yield from loader


class RawSnippets(torch.utils.data.Dataset):
    """Training snippets as raw JPEG bytes, for decoding on the GPU (the --gpu-decode path)."""

    def __init__(self, store: Path, video_ids: list[str], counts: list[int], segments: int):
        self.reader, self.video_ids, self.counts, self.segments = open_reader(store), video_ids, counts, segments

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int):
        positions = snippet_positions(train_starts(self.counts[index], self.segments, 1), 1, self.counts[index])
        raw = self.reader.frames(self.video_ids[index], positions, "rgb", decode=False)
        return [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in raw], index % 101


def transpose(items: list) -> tuple:
    """Collate (bytes list, label) items into (videos, labels) without stacking ragged bytes."""
    return tuple(zip(*items))


def gpu_decoded_batches(loader, segments: int, size: int, device: torch.device):
    """Decode each batch's JPEGs with nvjpeg and augment on the GPU."""
    from torchvision.io import decode_jpeg

    for videos, labels in endless(loader):
        clips = []
        for encoded in videos:
            stack = torch.stack(decode_jpeg(encoded, device=device))
            clips.append(train_transform(stack, "rgb", segments, 1, size))
        yield torch.stack(clips), torch.as_tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="tsn", choices=ARCHS, help="tsn, or a 3D model over 16-frame clips")
    parser.add_argument("--clip-len", type=int, default=16, help="3D archs: frames per clip")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--size", type=int, default=None, help="crop size (TSN 224, 3D 112)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--device", default=None)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workdir", type=Path, default=None, help="a workdir or store to read; default: the sample clips")
    parser.add_argument("--gpu-decode", action="store_true")
    parser.add_argument("--test-snippets", type=int, default=25)
    parser.add_argument("--test-crops", type=int, default=10, choices=(1, 3, 10))
    parser.add_argument("--test-videos", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    classes = 101
    params = make_params("rgb", arch=args.arch, backbone=args.backbone, pretrained="none", segments=args.segments,
                         size=args.size, clip_len=args.clip_len)
    args.size, args.channels_last = params.size, args.channels_last and params.arch == "tsn"
    model = build_model(params, classes, "none").to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(optimizer_groups(model, params), lr=1e-4, momentum=0.9)
    dtype = autocast_dtype(device, args.amp)

    synthetic = train_steps(
        model, synthetic_batches(args.batch, args.segments, args.size, classes, device, params), optimizer, device, dtype,
        args.channels_last, args.steps,
    )
    with tempfile.TemporaryDirectory() as temp:
        store = args.workdir or sample_workdir(Path(temp))
        reader = open_reader(store)
        ids = reader.video_ids()
        counts = [reader.count(video_id, "rgb") for video_id in ids]
        labels = [i % classes for i in range(len(ids))]
        repeat = max(1, -(-args.batch * (args.steps + 1) // len(ids)))  # enough items for every step
        if params.arch == "tsn":
            train_set = SnippetDataset(
                store, ids * repeat, labels * repeat, counts * repeat, "rgb", args.segments, 1, args.size, mode="train",
            )
        else:
            train_set = ClipDataset(store, ids * repeat, labels * repeat, counts * repeat, "rgb", params.clip_len, 1, args.size)
        if args.gpu_decode:
            raw = RawSnippets(store, ids * repeat, counts * repeat, args.segments)
            loader = torch.utils.data.DataLoader(
                raw, batch_size=args.batch, shuffle=True, num_workers=args.workers, collate_fn=transpose,
            )
            batches = gpu_decoded_batches(loader, args.segments, args.size, device)
        else:
            batches = endless(make_loader(train_set, args.batch, shuffle=True, workers=args.workers, drop_last=True))
        pipeline = train_steps(model, batches, optimizer, device, dtype, args.channels_last, args.steps)
        loader_only = loader_rate(train_set, args.batch, args.workers, args.steps)
        test_set = SnippetDataset(
            store, ids[: args.test_videos], labels[: args.test_videos], counts[: args.test_videos], "rgb",
            args.test_snippets, 1, args.size, mode="test", crops=args.test_crops,
        ) if params.arch == "tsn" else ClipDataset(
            store, ids[: args.test_videos], labels[: args.test_videos], counts[: args.test_videos], "rgb",
            params.clip_len, 1, args.size, mode="test", clips=args.test_snippets, crops=args.test_crops,
        )
        _, test_rate = score_videos(model, test_set, device, "raw", 1, min(args.workers, 4), dtype, progress=False)
    print(json.dumps({
        "machine": {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "config": {"arch": params.arch, "clip_len": params.clip_len if params.arch != "tsn" else None, "backbone": args.backbone, "segments": args.segments, "size": args.size, "batch": args.batch,
                   "steps": args.steps, "workers": args.workers, "amp": str(dtype), "channels_last": args.channels_last,
                   "gpu_decode": args.gpu_decode, "test_views": f"{args.test_snippets} snippets x {args.test_crops} crops"},
        "synthetic_clips_per_s": round(synthetic, 2),
        "pipeline_clips_per_s": round(pipeline, 2),
        "ratio": round(pipeline / synthetic, 3),
        "loader_clips_per_s": round(loader_only, 2),
        "test_videos_per_s": round(test_rate, 3),
    }, indent=2))


def loader_rate(dataset, batch: int, workers: int, steps: int) -> float:
    """Clips per second of the data loader alone (after its first batch, which pays the worker start-up)."""
    batches = endless(make_loader(dataset, batch, shuffle=True, workers=workers, drop_last=True))
    next(batches)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        clips, _ = next(batches)
        seen += len(clips)
    return seen / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
