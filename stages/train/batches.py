"""From the loader's uint8 batches to model input on the device, the next batch prepared while the model works.

`DeviceBatches(loader, device, prepare)` iterates a DataLoader of (pictures, flips, labels) and yields
what `prepare` makes of each batch on `device`: `clips` for training and validation ([B, K, channels,
S, S]), `views` for the test protocol ([B, crops, K, channels, S, S]). On a CUDA device the copy of
batch n+1 (from pinned memory, asynchronous) and its transforms are issued on a side stream before
batch n is handed out, so they overlap the model's work on batch n (the prefetcher of NVIDIA's
ImageNet examples: the main stream waits on the side stream's events, and tensors made there are
recorded on the main stream so the allocator does not reuse them early). On the CPU the same
`prepare` runs in line: one code path, the same tensors.

`VideoBatches` feeds the test: workers read one video each (a test video is 25 x 10 views' worth of
pictures), and the main process groups them into passes of B videos, so the first pass starts once
the workers together have read B videos instead of once one worker has read all B, and the next
videos are read while the model runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.transforms import flip_and_normalise, video_views


def move(pictures, device: torch.device):
    """A tensor, or a list of tensors (test videos of mixed sizes), onto `device` without blocking the host."""
    if isinstance(pictures, torch.Tensor):
        return pictures.to(device, non_blocking=True)
    return [picture.to(device, non_blocking=True) for picture in pictures]


def as_channels_last(clips: torch.Tensor) -> torch.Tensor:
    """channels_last for the [N, C, H, W] view the backbone sees of a [..., C, H, W] batch."""
    lead = clips.shape[:-3]
    flat = clips.reshape(-1, *clips.shape[-3:]).contiguous(memory_format=torch.channels_last)
    return flat.unflatten(0, lead)


def prepare_clips(
    batch, device: torch.device, modality: str, segments: int, length: int, channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clips [B, K, channels, S, S] float32, labels) on `device` from a training or validation batch."""
    pictures, flips, labels = batch
    clips = flip_and_normalise(move(pictures, device), flips.to(device, non_blocking=True), modality, segments, length)
    return (as_channels_last(clips) if channels_last else clips), labels.to(device, non_blocking=True)


def prepare_views(
    batch, device: torch.device, modality: str, segments: int, length: int, size: int, crops: int,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(views [B, crops, K, channels, S, S] float32, labels) on `device` from a test batch of whole videos."""
    videos, _, labels = batch
    views = video_views(move(videos, device), modality, segments, length, size, crops)
    return (as_channels_last(views) if channels_last else views), labels.to(device, non_blocking=True)


def prepare_ready(batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) on `device` from a batch the workers already made into float model input (3D clips)."""
    inputs, labels = batch
    return move(inputs, device), labels.to(device, non_blocking=True)


class LoaderError(TsnpipeError):
    """A loader worker failed or died; the run stops with one sentence."""


def worker_batches(loader: Iterable) -> Iterator:
    """The loader's batches; when its worker processes read them, a worker that failed (shared memory it could not
    grow under `ulimit -f` or a full /dev/shm, an error outside any one video) or died ends the run with one
    sentence instead of a traceback. A loader without workers raises as it is."""
    batches = iter(loader)
    if not getattr(loader, "num_workers", 0):
        yield from batches
        return
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as error:  # torch wraps a worker's exception, or reports a worker's death, as one
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            cause = lines[-1][:300] if lines else type(error).__name__
            hint = ("raise the file size limit (ulimit -f) or free /dev/shm, or pass --workers 0"
                    if "File too large" in cause or "No space left" in cause or "resize" in cause
                    else "pass --workers 0 to read in this process and see the error in full")
            raise LoaderError(f"A picture-reading worker process failed ({cause}); finished work is kept: {hint}, "
                              "and run the command again.") from None
        yield batch


class DeviceBatches:
    """Batches of `loader` prepared on `device` by `prepare(batch, device)`; on CUDA, one batch ahead on a side stream."""

    def __init__(self, loader: Iterable, device: torch.device, prepare: Callable):
        self.loader, self.device, self.prepare = loader, torch.device(device), prepare

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        if self.device.type != "cuda":
            for batch in worker_batches(self.loader):
                yield self.prepare(batch, self.device)
            return
        side = torch.cuda.Stream(self.device)
        batches = worker_batches(self.loader)
        ahead = self.stage(next(batches, None), side)
        while ahead is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(side)
            for tensor in tensors_in(ahead):
                tensor.record_stream(main)
            current, ahead = ahead, self.stage(next(batches, None), side)
            yield current

    def stage(self, batch, side: torch.cuda.Stream):
        """Issue the copy and transforms of one batch on the side stream; None at the loader's end."""
        if batch is None:
            return None
        with torch.cuda.stream(side):
            return self.prepare(batch, self.device)


class VideoBatches:
    """Batches of `videos` test videos (pictures as a list of [T, C, H, W] stacks, flips, labels) from a loader
    of single-video batches (batch size 1), in the loader's order."""

    def __init__(self, loader: Iterable, videos: int) -> None:
        self.loader, self.videos = loader, videos

    def __len__(self) -> int:
        return -(-len(self.loader) // self.videos)

    def __iter__(self) -> Iterator:
        group = []
        for item in self.loader:
            group.append(item)
            if len(group) == self.videos:
                yield join_videos(group)
                group = []
        if group:
            yield join_videos(group)


def join_videos(items: list[tuple]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """One batch from single-video batches: their picture stacks as a list (still in pinned memory when the
    loader pinned them), flips and labels concatenated."""
    pictures = [video for stacked, _, _ in items
                for video in (stacked if isinstance(stacked, list) else stacked.unbind(0))]
    return pictures, torch.cat([flips for _, flips, _ in items]), torch.cat([labels for _, _, labels in items])


def tensors_in(prepared) -> list[torch.Tensor]:
    """The tensors of a prepared batch (a tuple of tensors or lists of tensors)."""
    found = []
    for item in prepared:
        found.extend(item if isinstance(item, (list, tuple)) else [item])
    return [item for item in found if isinstance(item, torch.Tensor)]
