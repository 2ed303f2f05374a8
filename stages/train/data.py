"""Split lists in, snippet tensors out: what a DataLoader worker does for one video.

A split folder (`W/splits/<source>/split<N>/`, written by `tsnpipe build-splits`) holds train.csv and
test.csv (video_id, label, class_name, frames, flow_pairs; labels 0-based) and classes.txt (one class
name a line, in label order). Pictures are read through `tsnpipe.stages.store.open_reader`, from the
JPEG folders or a packed store; the reader opens its files lazily, so each worker gets its own handle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store import open_reader
from tsnpipe.stages.train.sampling import centre_starts, snippet_positions, train_starts
from tsnpipe.stages.train.transforms import evaluation_views, train_transform

SPLIT_COLUMNS = ("video_id", "label", "class_name", "frames", "flow_pairs")


class SplitError(TsnpipeError):
    """A split list that is missing or malformed."""


def read_split(split_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(train table, test table, class names) of one split folder."""
    split_dir = Path(split_dir)
    classes_path = split_dir / "classes.txt"
    if not classes_path.is_file():
        raise SplitError(f"There is no {classes_path}; run `tsnpipe build-splits` for this workdir first.")
    class_names = [line.strip() for line in classes_path.read_text().splitlines() if line.strip()]
    tables = []
    for name in ("train.csv", "test.csv"):
        tables.append(read_split_table(split_dir / name, len(class_names)))
    return tables[0], tables[1], class_names


def read_split_table(path: Path, num_classes: int) -> pd.DataFrame:
    """One split list, checked: the columns exist and labels fall inside the class list."""
    if not path.is_file():
        raise SplitError(f"There is no {path}; run `tsnpipe build-splits` for this workdir first.")
    table = pd.read_csv(path, dtype={"video_id": str, "class_name": str})
    missing = [column for column in SPLIT_COLUMNS if column not in table.columns]
    if missing:
        raise SplitError(f"{path} lacks the columns {', '.join(missing)}; rebuild it with `tsnpipe build-splits`.")
    if len(table) and (table["label"].min() < 0 or table["label"].max() >= num_classes):
        raise SplitError(f"{path} has labels outside 0..{num_classes - 1} of classes.txt; rebuild it with `tsnpipe build-splits`.")
    return table


def counts_for(table: pd.DataFrame, modality: str) -> np.ndarray:
    """Per video, the number of positions a snippet can start from: flow pairs for flow, else frames."""
    column = "flow_pairs" if modality == "flow" else "frames"
    counts = pd.to_numeric(table[column], errors="coerce")
    empty = table["video_id"][~(counts > 0)].tolist()
    if empty:
        step = "extract-flow" if modality == "flow" else "extract-frames"
        raise SplitError(
            f"{len(empty)} videos of the split have no {column} (e.g. {empty[0]!r}); run `tsnpipe {step}` "
            "and `tsnpipe build-splits` again, or drop them from the split."
        )
    return counts.to_numpy(dtype=np.int64)


def frames_per_snippet(modality: str, length: int) -> int:
    """Pictures read per snippet: 1 RGB frame, L+1 frames for L differences, L flow pairs."""
    if modality == "rgb":
        return 1
    if modality == "rgbdiff":
        return length + 1
    return length


def read_stack(reader, video_id: str, positions: list[int], modality: str) -> torch.Tensor:
    """The pictures at `positions` as one uint8 tensor [T, C, H, W] (C = 3 RGB, or 2 for flow x, y)."""
    if modality == "flow":
        xs = reader.frames(video_id, positions, "flow_x")
        ys = reader.frames(video_id, positions, "flow_y")
        return torch.from_numpy(np.stack([np.stack(xs), np.stack(ys)], axis=1))
    frames = np.stack(reader.frames(video_id, positions, "rgb"))
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


class SnippetDataset(Dataset):
    """One item per video: (snippets, label).

    mode "train": random segment starts and multi-scale crop/flip, snippets [K, C, S, S];
    mode "val": segment centres, centre crop, [K, C, S, S];
    mode "test": segment centres and `crops` views, [crops, K, C, S, S].
    """

    def __init__(
        self, store: str | Path, video_ids: list[str], labels: list[int], counts: list[int], modality: str,
        segments: int, length: int, size: int, mode: str = "train", crops: int = 1,
    ):
        self.reader = open_reader(store)
        self.video_ids = list(video_ids)
        self.labels = [int(label) for label in labels]
        self.counts = [int(count) for count in counts]
        self.modality, self.segments, self.length = modality, segments, length
        self.size, self.mode, self.crops = size, mode, crops
        self.span = frames_per_snippet(modality, length)

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video_id, count = self.video_ids[index], self.counts[index]
        if self.mode == "train":
            starts = train_starts(count, self.segments, self.span)
        else:
            starts = centre_starts(count, self.segments, self.span)
        positions = snippet_positions(starts, self.span, count)
        stack = read_stack(self.reader, video_id, positions, self.modality)
        if self.mode == "train":
            return train_transform(stack, self.modality, self.segments, self.length, self.size), self.labels[index]
        views = evaluation_views(stack, self.modality, self.segments, self.length, self.size, self.crops)
        return (views[0] if self.mode == "val" else views), self.labels[index]


def table_dataset(
    store: str | Path, table: pd.DataFrame, modality: str, segments: int, length: int, size: int, mode: str,
    crops: int = 1,
) -> SnippetDataset:
    """A SnippetDataset over the videos of a split table (train.csv or test.csv)."""
    return SnippetDataset(
        store, table["video_id"].tolist(), table["label"].tolist(), counts_for(table, modality), modality,
        segments, length, size, mode, crops,
    )


def make_loader(
    dataset: Dataset, batch: int, shuffle: bool, workers: int, drop_last: bool = False, shard: bool = True,
) -> DataLoader:
    """A DataLoader; under torch.distributed and with `shard`, each rank reads its own share (DistributedSampler)."""
    sampler = None
    if shard and torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset, batch_size=batch, shuffle=shuffle, sampler=sampler, num_workers=workers,
        pin_memory=torch.cuda.is_available(), drop_last=drop_last, persistent_workers=workers > 0,
    )
