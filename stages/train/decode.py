"""`train --gpu-decode`: workers read JPEG bytes, the device decodes a whole batch in one call.

Where the CPU cores cannot decode JPEGs as fast as the GPU trains (many GPUs on few cores; the flow
stream, 10 JPEGs a snippet), the workers only read the compressed bytes (`EncodedSnippets`), and
`prepare_encoded` decodes every picture of a batch with one `torchvision.io.decode_jpeg` call on the
device (nvjpeg on CUDA), then cuts the same crops the workers would (`transforms.train_crop` or
`centre_crop`, in float on the device) and runs `flip_and_normalise`. On the CPU the same code decodes
with libjpeg, so the path is tested without a GPU.

Differences from the worker path: the crop and flip are drawn from the main process's random stream
(seeded by the run's seed and restored on resume) rather than each worker's, and the crop is resized in
float instead of uint8, within one grey level of it. JPEG only: a store of PNG flow is refused.
"""

from __future__ import annotations

import numpy as np
import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.batches import as_channels_last
from tsnpipe.stages.train.data import SnippetDataset
from tsnpipe.stages.train.sampling import item_generator
from tsnpipe.stages.train.transforms import centre_crop, flip_and_normalise, train_crop

JPEG_START = b"\xff\xd8"


def collate_encoded(items: list[tuple[list[torch.Tensor], int]]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """(per video, its list of JPEG byte tensors; labels int64 [B]): ragged bytes are not stacked."""
    videos, labels = zip(*items)
    return list(videos), torch.as_tensor(np.asarray(labels))  # multi-label: float targets [B, C]


class EncodedSnippets(SnippetDataset):
    """One item per video: (the JPEG bytes of its pictures as uint8 tensors, label), for mode train or val.

    Pictures in snippet order; for flow, each position's x then y image.
    """

    collate = staticmethod(collate_encoded)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.video_ids:
            first = self.encoded(self.video_ids[0], [0])[0]
            if bytes(first[:2]) != JPEG_START:
                raise TsnpipeError(
                    f"{self.reader.path} holds {self.modality} pictures that are not JPEG (PNG flow?), and "
                    "--gpu-decode decodes JPEG only; train without --gpu-decode."
                )

    def encoded(self, video_id: str, positions: list[int]) -> list[bytes]:
        """The stored bytes of the pictures at `positions`; for flow, x then y for each position."""
        if self.modality != "flow":
            return self.reader.frames(video_id, positions, "rgb", decode=False)
        xs = self.reader.frames(video_id, positions, "flow_x", decode=False)
        ys = self.reader.frames(video_id, positions, "flow_y", decode=False)
        return [data for pair in zip(xs, ys) for data in pair]

    def __getitem__(self, key) -> tuple[list[torch.Tensor], int]:
        index, generator = item_generator(key)
        raw = self.encoded(self.video_ids[index], self.positions(index, generator))
        return [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in raw], self.labels[index]


def decode_stacks(videos: list[list[torch.Tensor]], device: torch.device, modality: str) -> list[torch.Tensor]:
    """Every picture of the batch decoded in one call on `device`, as one uint8 stack [T, C, H, W] a video."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if modality == "flow" else ImageReadMode.RGB
    if torch.device(device).type == "cuda":
        # nvJPEG decodes on its own stream without waiting for ours, into memory our stream's caching allocator
        # hands it: blocks freed while our queued kernels (the previous batch's crops) may still read them.
        # Wait for those kernels first (torchvision pull request 9606; torchcodec waits the same way).
        torch.cuda.current_stream(device).synchronize()
    pictures = decode_jpeg([data for video in videos for data in video], mode=mode, device=device)
    stacks, start = [], 0
    for video in videos:
        stack = torch.stack(pictures[start:start + len(video)])
        start += len(video)
        stacks.append(stack.reshape(-1, 2, *stack.shape[-2:]) if modality == "flow" else stack)
    return stacks


def prepare_encoded(
    batch, device: torch.device, modality: str, segments: int, length: int, size: int, train: bool,
    channels_last: bool = False, flip_rule=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clips [B, K, channels, S, S] float32, labels) on `device` from a batch of JPEG bytes.

    Training: per video a random multi-scale crop and flip decision (`train_crop`); validation: the
    centre crop, no flip.
    """
    videos, labels = batch
    crops, flips = [], []
    for stack in decode_stacks(videos, device, modality):
        if train:
            crop, flip = train_crop(stack.float(), modality, size)
        else:
            crop, flip = centre_crop(stack.float(), size), False
        crops.append(crop)
        flips.append(flip)
    flips, labels = torch.tensor(flips, device=device), labels.to(device, non_blocking=True)
    if train and flip_rule is not None:  # the split's flip rule (train.flip): off, or swap left/right labels
        flips, labels = flip_rule.train_batch(flips, labels)
    clips = flip_and_normalise(torch.stack(crops), flips, modality, segments, length)
    return (as_channels_last(clips) if channels_last else clips), labels
