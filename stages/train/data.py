"""Split lists in, snippet tensors out: what a DataLoader worker does for one video.

A split folder (`W/splits/<source>/split<N>/`, written by `tsnpipe build-splits`) holds train.csv and
test.csv (video_id, label, class_name, frames, flow_pairs; labels 0-based) and classes.txt (one class
name a line, in label order). Pictures are read through `tsnpipe.stages.store.reader.open_reader`, from the
JPEG folders or a packed store; the reader opens its files lazily, so each worker gets its own handle.

Workers hand over uint8 pictures, never float: a training clip of 8 RGB crops at 224 is 1.2 MB
instead of 4.8 MB, a test video of 25 frames crosses whole (views are cut on the device). Scaling,
normalisation, flips and test views happen per batch on the device (`transforms.flip_and_normalise`,
`transforms.video_views`, driven by `batches.DeviceBatches`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.reader import check_holds, open_reader
from tsnpipe.stages.threads import BudgetedLoader
from tsnpipe.stages.train.flip import FlipRule
from tsnpipe.stages.train.sampling import EpochSampler, centre_starts, item_generator, snippet_positions, train_starts
from tsnpipe.stages.train.transforms import centre_crop, train_crop

SPLIT_COLUMNS = ("video_id", "label", "class_name", "frames", "flow_pairs")


class SplitError(TsnpipeError):
    """A split list that is missing or malformed."""


def read_split(split_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(train table, test table, class names) of one split folder; a split without training or test videos
    is refused (it would train, or score, nothing and say it succeeded)."""
    split_dir = Path(split_dir)
    classes_path = split_dir / "classes.txt"
    if not classes_path.is_file():
        raise SplitError(f"There is no {classes_path}; run `tsnpipe build-splits` for this workdir first.")
    try:
        text = classes_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SplitError(f"{classes_path} cannot be read as UTF-8 text ({type(error).__name__}); rebuild it with "
                         "`tsnpipe build-splits`.") from None
    class_names = [line.strip() for line in text.splitlines() if line.strip()]
    if not class_names:
        raise SplitError(f"{classes_path} names no classes; rebuild it with `tsnpipe build-splits`.")
    tables = []
    for name in ("train.csv", "test.csv"):
        table = read_split_table(split_dir / name, len(class_names))
        if table.empty:
            raise SplitError(f"{split_dir / name} lists no videos, so there is nothing to {name[:-4]} on; rebuild the "
                             "split with `tsnpipe build-splits` from annotation files that name extracted videos.")
        tables.append(table)
    return tables[0], tables[1], class_names


def _first_bad(table: pd.DataFrame, bad, path: Path, column: str, wants: str) -> None:
    """Raise naming the first row where `bad` holds (line = row + 2: the header is line 1)."""
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        row = int(bad.argmax())
        value = table[column].iloc[row]
        shown = "" if pd.isna(value) else str(value)[:40]
        raise SplitError(f"{path} line {row + 2}: {column} {shown!r} is not {wants}; "
                         "rebuild the file with `tsnpipe build-splits` rather than editing it by hand.")


def read_split_table(path: Path, num_classes: int) -> pd.DataFrame:
    """One split list, checked line by line: the columns exist, labels (and a multi-label split's `labels`, ids
    joined by `;`) are class ids of classes.txt, and frame and flow-pair counts are whole numbers."""
    if not path.is_file():
        raise SplitError(f"There is no {path}; run `tsnpipe build-splits` for this workdir first.")
    try:
        table = pd.read_csv(path, dtype={"video_id": str, "class_name": str, "labels": str}, keep_default_na=False,
                            na_values={c: [""] for c in ("label", "frames", "flow_pairs")})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise SplitError(f"{path} is not a readable split list ({type(error).__name__}); rebuild it with "
                         "`tsnpipe build-splits`.") from None
    missing = [column for column in SPLIT_COLUMNS if column not in table.columns]
    if missing:
        raise SplitError(f"{path} lacks the columns {', '.join(missing)}; rebuild it with `tsnpipe build-splits`.")
    _first_bad(table, table["video_id"].str.strip() == "", path, "video_id", "a video id")
    for column, top, wants in (("label", num_classes, f"a class id of classes.txt (0..{num_classes - 1})"),
                               ("frames", None, "a count of frames"), ("flow_pairs", None, "a count of flow pairs")):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype="float64")
        bad = ~np.isfinite(values) | (values < 0) | (values != np.round(values))
        if top is not None:
            bad |= values >= top
        _first_bad(table, bad, path, column, wants)
        table[column] = values.astype("int64")
    if "labels" in table.columns:
        def bad_labels(text: str) -> bool:
            parts = text.split(";")
            return not all(p.isascii() and p.isdigit() and int(p) < num_classes for p in parts)
        _first_bad(table, [bad_labels(text) for text in table["labels"]], path, "labels",
                   f"class ids of classes.txt (0..{num_classes - 1}) joined by ';'")
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
    if modality == "flow":  # one array per pair in a store's `pairs` layout, two images otherwise
        return torch.from_numpy(reader.flow_stack(video_id, positions))
    frames = np.stack(reader.frames(video_id, positions, "rgb"))
    return torch.from_numpy(frames).permute(0, 3, 1, 2)


def collate_pictures(items: list[tuple[torch.Tensor, bool, int]]) -> tuple:
    """(pictures, flips, labels) of a batch: pictures stacked [B, T, C, H, W] when all videos share a
    picture size, else a list (test videos of mixed sizes); flips bool [B]; labels int64 [B]."""
    pictures, flips, labels = zip(*items)
    same = all(p.shape == pictures[0].shape for p in pictures)
    stacked = default_collate(list(pictures)) if same else list(pictures)  # in a worker, straight into shared memory
    return stacked, torch.tensor(flips), torch.as_tensor(np.asarray(labels))  # multi-label: float targets [B, C]


class SnippetDataset(Dataset):
    """One item per video: (pictures, flip, label), the pictures uint8 [T, C, S, S] or [T, C, H, W].

    mode "train": random segment starts, a multi-scale crop resized to S x S, and a random flip
    decision that the device carries out; mode "val": segment centres, the centre S x S crop, no flip;
    mode "test": segment centres, the pictures whole at their stored size, from which the device cuts
    `crops` views per snippet (`transforms.video_views`). T = K x pictures per snippet.
    """

    collate = staticmethod(collate_pictures)
    flip_rule = FlipRule()  # training sets the split's rule (train.flip): flip on, off, or swap left/right labels

    def __init__(
        self, store: str | Path, video_ids: list[str], labels: list[int], counts: list[int], modality: str,
        segments: int, length: int, size: int, mode: str = "train", crops: int = 1,
    ):
        self.reader = open_reader(store)
        self.video_ids = list(video_ids)
        check_holds(self.reader, self.video_ids)
        self.labels = [label if isinstance(label, np.ndarray) else int(label) for label in labels]  # multi-hot rows: multi-label
        self.counts = [int(count) for count in counts]
        self.modality, self.segments, self.length = modality, segments, length
        self.size, self.mode, self.crops = size, mode, crops
        self.span = frames_per_snippet(modality, length)

    def __len__(self) -> int:
        return len(self.video_ids)

    def positions(self, index: int, generator: torch.Generator | None = None) -> list[int]:
        """The 0-based picture positions of video `index`'s snippets: random starts in training, else centres."""
        count = self.counts[index]
        if self.mode == "train":
            starts = train_starts(count, self.segments, self.span, generator)
        else:
            starts = centre_starts(count, self.segments, self.span)
        return snippet_positions(starts, self.span, count)

    def __getitem__(self, key) -> tuple[torch.Tensor, bool, int]:
        """`key`: an index, or `(index, seed, epoch)` from `EpochSampler` (the draws then depend on those alone)."""
        index, generator = item_generator(key)
        stack = read_stack(self.reader, self.video_ids[index], self.positions(index, generator), self.modality)
        if self.mode == "train":
            pictures, flip = train_crop(stack, self.modality, self.size, generator)
            flip, label = self.flip_rule.train(flip, self.labels[index])
            return pictures, flip, label
        if self.mode == "val":
            return centre_crop(stack, self.size), False, self.labels[index]
        return stack, False, self.labels[index]


def table_dataset(
    store: str | Path, table: pd.DataFrame, modality: str, segments: int, length: int, size: int, mode: str,
    crops: int = 1, kind: type[SnippetDataset] = SnippetDataset,
) -> SnippetDataset:
    """A SnippetDataset (or a subclass `kind`: train.decode.EncodedSnippets) over the videos of a split table
    (train.csv or test.csv)."""
    return kind(
        store, table["video_id"].tolist(), table["label"].tolist(), counts_for(table, modality), modality,
        segments, length, size, mode, crops,
    )


def split_is_multi_label(split_dir: str | Path) -> bool:
    """Whether build-splits marked the split multi-label (params.json `multi_label`, e.g. --mmit)."""
    import json

    try:
        return bool(json.loads((Path(split_dir) / "params.json").read_text()).get("multi_label", False))
    except (OSError, ValueError):
        return False


def split_source(split_dir: str | Path) -> str:
    """The data set a split was built from (params.json `source`, else the folder above splitN: mmit, hvu, ...)."""
    import json

    try:
        return str(json.loads((Path(split_dir) / "params.json").read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return Path(split_dir).resolve().parent.name


def split_targets(table: pd.DataFrame, num_classes: int) -> list[np.ndarray]:
    """Multi-label targets of a split table: one float32 0/1 row of `num_classes` per video, from its `labels`
    column (`3;17`, written by build-splits --mmit)."""
    if "labels" not in table.columns:
        raise SplitError("This split has one label a video (no labels column); train it without --multi-label, "
                         "or build a multi-label split (build-splits --mmit).")
    rows = []
    for text in table["labels"].astype(str):
        row = np.zeros(num_classes, dtype=np.float32)
        row[[int(part) for part in text.split(";")]] = 1.0
        rows.append(row)
    return rows


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def default_workers() -> int:
    """Loader workers when none are asked for: one per available core, less one for the main process
    (it drives the device and runs the batch transforms); at least 1."""
    return max(1, available_cores() - 1)


def make_loader(
    dataset: Dataset, batch: int, shuffle: bool, workers: int | None = None, drop_last: bool = False,
    shard: bool = True, pin: bool | None = None, seed: int = 0, prefetch: int | None = None,
) -> DataLoader:
    """A DataLoader batching items with the dataset's `collate` (uint8 pictures for a SnippetDataset; a 3D
    ClipDataset's float clips are stacked as they are); `workers` None means `default_workers()`.

    Workers persist across epochs; batches land in pinned memory when `pin` (default: when there is a
    CUDA GPU), so the copy to the GPU can run asynchronously. Under torch.distributed and with `shard`,
    each rank reads its own share (DistributedSampler). A shuffled loader draws its order and each item's
    randomness from (seed, epoch, index) alone (`sampling.EpochSampler`; call its `set_epoch`), and the
    loader's own seed comes from `seed`, not from torch's global stream: a resumed run reads exactly what an
    uninterrupted one would, whatever the workers. `prefetch`: batches each worker reads ahead (torch's
    default, 2, when None).
    """
    workers = default_workers() if workers is None else workers
    pin = torch.cuda.is_available() if pin is None else pin
    sampler = None
    if shard and torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, drop_last=drop_last, seed=seed)
    if shuffle:
        sampler = EpochSampler(len(dataset), seed, sampler)
        shuffle = False
    collate = getattr(dataset, "collate", None)  # 3D clips: float input, stacked by the default collate
    return BudgetedLoader(
        dataset, batch_size=batch, shuffle=shuffle, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=pin, drop_last=drop_last, persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed),
        prefetch_factor=prefetch if workers > 0 else None,
    )
