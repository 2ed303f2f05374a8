"""The pictures of many videos' snippets, cut into batches of about `batch` snippets, read by loader workers.

Every video is planned before anything is read (`VideoPlan`: its snippet centres), then the snippet sequence of
all videos, one after the other, is cut into pieces of at most `batch` snippets: a batch holds the end of one
video and the start of the next, so short videos (UCF101's 7 s, 11 snippets) still fill the device, and a
one-hour video never sits in memory whole. A loader item is one batch: per piece (video, first snippet, stop)
the uint8 pictures of every stream, as `tsnpipe test` hands them over (`data.read_stack`: whole pictures
at their stored size; views are cut on the device). A piece whose pictures cannot be read carries the
error instead, so one bad video fails its row and not the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.features.snippets import window
from tsnpipe.stages.store.reader import open_reader
from tsnpipe.stages.train.data import frames_per_snippet, read_stack
from tsnpipe.stages.train.recipe import TrainParams

KIND_OF = {"rgb": "rgb", "rgbdiff": "rgb", "flow": "flow_x"}


@dataclass(frozen=True)
class VideoPlan:
    video_id: str
    centres: np.ndarray  # 0-based centre frame of each snippet, int32 (4 bytes a snippet: millions fit)
    short: bool = False  # shorter than one snippet: one clamped snippet


@dataclass(frozen=True)
class Piece:
    video: int  # index into the plans
    start: int  # first snippet
    stop: int


def cut_batches(plans: list[VideoPlan], batch: int) -> list[list[Piece]]:
    """The snippet sequence of all videos cut into batches of at most `batch` snippets."""
    batches, current, room = [], [], batch
    for index, plan in enumerate(plans):
        start = 0
        while start < len(plan.centres):
            take = min(room, len(plan.centres) - start)
            current.append(Piece(index, start, start + take))
            start, room = start + take, room - take
            if room == 0:
                batches.append(current)
                current, room = [], batch
    if current:
        batches.append(current)
    return batches


def snippet_positions(params: TrainParams, centres, count: int) -> list[int]:
    """Every position a stream reads for these snippets, snippet after snippet (as `data.read_stack` wants them)."""
    if params.arch == "tsn":
        length = frames_per_snippet(params.modality, params.length)
        return [p for centre in centres for p in window(centre, length, count)]
    return [p for centre in centres for p in window(centre, params.clip_len, count, params.stride)]


def stream_count(reader, video_id: str, params: TrainParams, where: Path) -> int:
    """Positions a stream can read in a video; a sentence naming the stage to run when there are none."""
    count = reader.count(video_id, KIND_OF[params.modality])
    if count < 1 and params.modality == "flow" and reader.count(video_id, "rgb") == 1:
        raise TsnpipeError(f"Video {video_id!r} has one frame in {where}, so no flow pair (TV-L1 needs two frames) and "
                           "nothing for a flow checkpoint to see; extract its frames at a higher --fps, or remove it.")
    if count < 1:
        step = "extract-flow" if params.modality == "flow" else "extract-frames"
        raise TsnpipeError(f"Video {video_id!r} has no {params.modality} pictures in {where}; run `tsnpipe {step}` "
                           "for it (and `tsnpipe pack` again when reading a store).")
    return count


class SnippetBatches(Dataset):
    """Item i: batch i as a list of (piece, [uint8 stack per stream] or the error's sentence)."""

    def __init__(self, store: str | Path, plans: list[VideoPlan], streams: list[TrainParams], batch: int):
        self.store, self.plans, self.streams = Path(store), plans, streams
        self.batches = cut_batches(plans, batch)
        self.reader = open_reader(store)

    def __len__(self) -> int:
        return len(self.batches)

    def read_piece(self, piece: Piece) -> list[torch.Tensor]:
        plan = self.plans[piece.video]
        stacks = []
        for params in self.streams:
            count = stream_count(self.reader, plan.video_id, params, self.store)
            positions = snippet_positions(params, plan.centres[piece.start:piece.stop].tolist(), count)
            stacks.append(read_stack(self.reader, plan.video_id, positions, params.modality))
        return stacks

    def __getitem__(self, index: int) -> list[tuple[Piece, list[torch.Tensor] | str]]:
        items = []
        for piece in self.batches[index]:
            try:
                items.append((piece, self.read_piece(piece)))
            except Exception as error:  # a missing or damaged picture fails this video, not the batch
                items.append((piece, " ".join(str(error).split()) or type(error).__name__))
        return items


def no_collate(batch):
    """The loader's items are whole batches already. In a worker process their pictures move to shared memory
    here, where a failure (the file size limit, `ulimit -f`, or a full /dev/shm) is raised and reaches the main
    process; left to the queue's feeder thread it was only printed there, and the main process waited for ever
    for a batch that never came."""
    if get_worker_info() is not None:
        for _, stacks in batch:
            if not isinstance(stacks, str):
                for stack in stacks:
                    stack.share_memory_()
    return batch
