"""Pack the JPEG frames and flow images of extracted videos into one LMDB or sharded HDF5 store.

Training then opens a handful of files instead of millions. The image bytes are copied as they are (no
re-encoding), so a frame read back from a store is byte-identical to its file. Flow images are JPEG or
PNG, as the flow manifest row of the video says (`extract-flow --format`); the store records which. In the
`pairs` flow layout (`flow_pairs`, `tsnpipe pack`'s default) flow is kept instead as one lossless array per
pair, the pixels a read of the folders gives; each video's entry records its layout.
Packing is incremental: a video whose images are already stored with the same checksum is skipped, a new
video is added, a re-extracted one replaces its entries; nothing else is rewritten. How each format stays whole when the
process is killed is told in `lmdb_writer` and `hdf5_writer`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.flow_pairs import check_layout, encode_pairs
from tsnpipe.stages.store.reader import FILE_PREFIX, FLOW_FORMATS, KINDS, flow_format, frame_name

FORMATS = ("lmdb", "hdf5")
STAGE_VERSION = 1
DEFAULT_SHARD_BYTES = 1 << 30


@dataclass(frozen=True)
class VideoImages:
    """All images of one video, in position order, read from the workdir's folders."""

    video_id: str
    images: dict[str, list[bytes]]  # kind -> image bytes (JPEG, flow JPEG or PNG), position order
    checksum: str
    flow_format: str = "jpg"
    pairs: list[bytes] | None = None  # the flow pairs in the `pairs` layout (`flow_pairs`); None: `images`
    flow_size: list[int] = field(default_factory=list)  # [H, W] of the flow images, `pairs` layout only

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(self.images[kind]) for kind in KINDS}

    @property
    def flow_layout(self) -> str:
        return "images" if self.pairs is None else "pairs"

    @property
    def nbytes(self) -> int:
        """The bytes the store holds for the video: its images, or its frames and flow pair arrays."""
        if self.pairs is not None:
            return sum(len(data) for data in self.images["rgb"]) + sum(len(data) for data in self.pairs)
        return sum(len(data) for kind in KINDS for data in self.images[kind])

    def layout_meta(self) -> dict:
        """What a store entry says of the flow layout (nothing for `images`, as stores written before say)."""
        return {} if self.pairs is None else {"flow_layout": "pairs", "flow_size": self.flow_size}

    def with_flow_layout(self, layout: str) -> "VideoImages":
        """The video as the store keeps it in `layout` (`flow_pairs`): `images` as read, or `pairs` encoded."""
        if check_layout(layout) == "images" or not self.images["flow_x"]:
            return self
        pairs, size = encode_pairs(self.video_id, self.images["flow_x"], self.images["flow_y"])
        return replace(self, pairs=pairs, flow_size=size)

    def stored(self) -> "StoredVideo":
        """What the index and the manifest keep of the video, without its images."""
        return StoredVideo(self.video_id, self.checksum, self.flow_format, self.counts, self.nbytes, self.layout_meta())


@dataclass(frozen=True)
class StoredVideo:
    """A video once its images are written: what its index entry and manifest row say."""

    video_id: str
    checksum: str
    flow_format: str
    counts: dict[str, int]
    nbytes: int
    layout_meta: dict = field(default_factory=dict)

    @property
    def flow_layout(self) -> str:
        return self.layout_meta.get("flow_layout", "images")


def _numbered(folder: Path, kind: str, image_format: str = "jpg") -> int:
    """How many `kind` images the folder holds, checking they are numbered 1..N without gaps."""
    if not folder.is_dir():
        return 0
    pattern = re.compile(rf"{re.escape(FILE_PREFIX[kind])}(\d{{5}})\.{image_format}")
    numbers = sorted(int(m.group(1)) for name in os.listdir(folder) if (m := pattern.fullmatch(name)))
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, (numbers[-1] if numbers else 0) + 1)) - set(numbers))
        raise TsnpipeError(
            f"{folder} has {kind} images numbered with gaps (first missing: {frame_name(kind, missing[0] - 1, image_format)}); "
            "re-extract that video before packing."
        )
    return len(numbers)


def checksum(images: dict[str, list[bytes]]) -> str:
    """sha256 over every image of every kind, length-prefixed, in kind and position order."""
    digest = hashlib.sha256()
    for kind in KINDS:
        for data in images[kind]:
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def read_video(workdir: str | os.PathLike, video_id: str, image_format: str | None = None) -> VideoImages:
    """Read a video's frames (required) and flow pairs (when extracted) from `W/frames` and `W/flow`.

    `image_format` is the flow images' format as the flow manifest records it; None reads what the folder holds.
    """
    workdir = Path(workdir)
    flow_folder = workdir / "flow" / video_id
    image_format = image_format or flow_format(flow_folder)
    if image_format not in FLOW_FORMATS:
        raise TsnpipeError(f"The flow format {image_format!r} of {video_id} is unknown; re-run `tsnpipe extract-flow`.")
    other = next(f for f in FLOW_FORMATS if f != image_format)
    if not (flow_folder / frame_name("flow_x", 0, image_format)).is_file() and \
            (flow_folder / frame_name("flow_x", 0, other)).is_file():
        raise TsnpipeError(
            f"{flow_folder} holds {other} flow images but the flow manifest says {image_format}; "
            "re-run `tsnpipe extract-flow` for it before packing."
        )
    images: dict[str, list[bytes]] = {}
    for kind in KINDS:
        folder = workdir / "frames" / video_id if kind == "rgb" else flow_folder
        kind_format = "jpg" if kind == "rgb" else image_format
        images[kind] = [(folder / frame_name(kind, p, kind_format)).read_bytes()
                        for p in range(_numbered(folder, kind, kind_format))]
    if not images["rgb"]:
        raise TsnpipeError(f"{workdir / 'frames' / video_id} holds no frames; run `tsnpipe extract-frames` for it before packing.")
    if len(images["flow_x"]) != len(images["flow_y"]):
        raise TsnpipeError(
            f"{workdir / 'flow' / video_id} has {len(images['flow_x'])} flow_x but {len(images['flow_y'])} flow_y images; "
            "re-run `tsnpipe extract-flow` for it before packing."
        )
    return VideoImages(video_id, images, checksum(images), image_format)


def stored_videos(store_path: str | os.PathLike, format: str) -> dict[str, dict]:
    """video_id -> {"checksum", "location", "flow_layout"} of what the store holds now (empty for a store not
    written yet)."""
    from tsnpipe.stages.store import hdf5_writer, lmdb_writer

    _check_format(format)
    return lmdb_writer.stored_videos(Path(store_path)) if format == "lmdb" else hdf5_writer.stored_videos(Path(store_path))


def check_free_space(store_path: Path, nbytes: int, margin: int = 16 << 20, file_bytes: int | None = None) -> None:
    """Refuse to start writing a video the disk has no room for, or that would take the file being written
    (`file_bytes` in it so far; HDF5 only, as LMDB reports EFBIG like any full disk) past the process's file
    size limit (`ulimit -f`, RLIMIT_FSIZE), so the sentence comes before the work; a write that fails all the
    same (a quota) is one OSError naming the file. What was committed before stays whole."""
    free = shutil.disk_usage(store_path).free
    if free < nbytes + margin:
        raise TsnpipeError(f"The disk holding {store_path} has {free / 1e6:,.1f} MB free, too little for the next "
                           f"video ({nbytes / 1e6:,.1f} MB); the videos packed before are kept: free some space and "
                           "run `tsnpipe pack` again.")
    limit = file_size_limit() if file_bytes is not None else None
    if limit is not None and file_bytes + nbytes + FILE_LIMIT_MARGIN > limit:
        raise TsnpipeError(f"The file size limit of this process (ulimit -f) is {limit / 1e6:,.1f} MB, too little for "
                           f"the next video ({nbytes / 1e6:,.1f} MB) in a shard of {store_path}; the videos packed "
                           "before are kept: raise the limit (or pack with a smaller --shard-mb) and run `tsnpipe "
                           "pack` again.")


FILE_LIMIT_MARGIN = 256 << 10  # HDF5's own metadata and free space in a shard, beyond the images


def file_size_limit() -> int | None:
    """The largest file this process may write (RLIMIT_FSIZE), or None when there is no limit."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise TsnpipeError(f"Unknown store format {format!r}; use --format lmdb or --format hdf5.")


def pack_videos(
    workdir: str | os.PathLike,
    store_path: str | os.PathLike,
    format: str,
    videos: Iterable[str],
    skip_unchanged: bool = True,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: Callable[[dict], None] | None = None,
    flow_formats: dict[str, str] | None = None,
    flow_layout: str = "images",
) -> list[dict]:
    """Pack `videos` (ids of done videos in `workdir`) into the store; return one fact dict per video.

    Facts: video_id, status ("done" | "failed"), store, format, location (LMDB key prefix or HDF5 shard),
    checksum, rgb, flow_pairs, flow_format, bytes, unchanged (already stored as is), error. `flow_formats`
    maps a video to its flow image format as the flow manifest says; a video it does not name is read as its
    folder holds. A video whose folders cannot be read fails alone; the others are still packed. `progress`
    is called with each fact. `flow_layout`: how flow is stored (`flow_pairs`): "pairs", one array per pair, or
    "images", each image's bytes; a video stored in the other layout is re-packed.
    """
    from tsnpipe.stages.store import hdf5_writer, lmdb_writer

    _check_format(format)
    check_layout(flow_layout)
    workdir, store_path = Path(workdir), Path(store_path)
    (lmdb_writer if format == "lmdb" else hdf5_writer).check_folder(store_path)
    before = stored_videos(store_path, format) if skip_unchanged else {}
    facts: list[dict] = []

    def report(fact: dict) -> None:
        fact = {"store": str(store_path), "format": format, **fact}
        facts.append(fact)
        if progress:
            progress(fact)

    def changed() -> Iterator[VideoImages]:
        for video_id in videos:
            try:
                video = read_video(workdir, video_id, (flow_formats or {}).get(video_id))
            except (TsnpipeError, OSError) as error:
                report(_failed(video_id, error))
                continue
            stored = before.get(video_id)
            layout = flow_layout if video.images["flow_x"] else "images"
            if stored and stored["checksum"] == video.checksum and stored["flow_layout"] == layout:
                report({**_done(video, stored["location"], unchanged=True), "flow_layout": layout})
                continue
            try:
                video = video.with_flow_layout(flow_layout)
            except TsnpipeError as error:
                report(_failed(video_id, error))
                continue
            yield video

    if format == "lmdb":
        for video, location in lmdb_writer.write_videos(store_path, changed()):
            report(_done(video, location, unchanged=False))
    else:
        for video, location in hdf5_writer.write_videos(store_path, changed(), shard_bytes):
            report(_done(video, location, unchanged=False))
    return facts


def _done(video: VideoImages, location: str, unchanged: bool) -> dict:
    return {
        "video_id": video.video_id, "status": "done", "location": location, "checksum": video.checksum,
        "rgb": video.counts["rgb"], "flow_pairs": video.counts["flow_x"], "flow_format": video.flow_format,
        "flow_layout": video.flow_layout, "bytes": video.nbytes,
        "unchanged": unchanged, "error": None,
    }


def _failed(video_id: str, error: Exception) -> dict:
    return {
        "video_id": video_id, "status": "failed", "location": None, "checksum": None, "rgb": 0, "flow_pairs": 0,
        "flow_format": None, "flow_layout": None, "bytes": 0, "unchanged": False, "error": str(error),
    }
