"""Write videos into a sharded HDF5 store: a folder (`*.hdf5`) of shard files plus `index.json`.

A shard `shard-00001.h5` holds group `/videos/<video_id>` per video with, per kind, one uint8 blob of the
concatenated image bytes (`rgb` JPEG, `flow_x`, `flow_y` JPEG or PNG) and an int64 offsets array (`rgb_offsets`, ...):
image p is blob[offsets[p]:offsets[p+1]], one read per image. `index.json` maps each video to its shard,
counts, checksum and flow image format.

Why shards: a pack run writes its videos into new shards only (each closed at about `shard_bytes`), so
adding videos never rewrites the existing files. Why a kill cannot tear the store: a shard is written
under a `.tmp` name, fsynced and renamed; only then is the index replaced (write, fsync, os.replace), and
the index is the only thing readers trust. Before a shard is renamed, the index lists it as `pending`,
so a kill between the rename and the index update leaves a shard the index still names. A kill loses at
most the shard being written; its leftovers (`shard-NNNNN.h5.tmp`, `index.json.tmp`, a pending shard)
are swept at the next run. A re-packed video's new entry lives in the new shard; a shard the index
named before and no video names now is deleted (space of an old version inside a still-used shard is
reclaimed only when all its videos have moved on).

tsnpipe deletes only what it made: the sweep removes only those names, and `check_folder` refuses a
folder holding anything else (a user's `x.tmp`, or a `shard-00007.h5` the index never named).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.pack import check_free_space
from tsnpipe.stages.store.reader import HDF5_INDEX, KINDS, read_hdf5_index

SHARD_PATTERN = re.compile(r"shard-(\d{5})\.h5")


def stored_videos(store_path: Path) -> dict[str, dict]:
    """video_id -> {"checksum", "location"} of every video the index names (empty when there is no store yet)."""
    index = read_hdf5_index(store_path)
    return {vid: {"checksum": e["checksum"], "location": e["shard"]} for vid, e in index["videos"].items()}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_index(store_path: Path, index: dict) -> None:
    tmp = store_path / f"{HDF5_INDEX}.tmp"
    try:
        with open(tmp, "w") as handle:
            json.dump(index, handle, sort_keys=True, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, store_path / HDF5_INDEX)
        _fsync_dir(store_path)
    except OSError as error:  # e.g. a full disk: the old index stays, and the message names the file
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(store_path / HDF5_INDEX)) from None


def own_names(index: dict) -> set[str]:
    """The file names a store with this index may hold: the index, the shards it names, and their temps."""
    shards = {entry["shard"] for entry in index["videos"].values()} | set(index.get("pending", []))
    return {HDF5_INDEX, f"{HDF5_INDEX}.tmp"} | shards | {f"{name}.tmp" for name in shards}


def check_folder(store_path: Path) -> None:
    """Refuse a --store folder that holds files tsnpipe did not write there."""
    if not store_path.is_dir():
        return
    present = {path.name for path in store_path.iterdir()}
    if not present:
        return
    if HDF5_INDEX not in present:  # only the temps of a first run cut short before its first index
        strangers = sorted(name for name in present if name != f"{HDF5_INDEX}.tmp"
                           and not (name.endswith(".h5.tmp") and SHARD_PATTERN.fullmatch(name[:-4])))
    else:
        index = read_hdf5_index(store_path)
        strangers = sorted(name for name in present - own_names(index)
                           if not (name.endswith(".h5.tmp") and SHARD_PATTERN.fullmatch(name[:-4])))
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise TsnpipeError(f"{store_path} holds files `tsnpipe pack` did not write ({shown}); give --store an empty "
                           "or new folder, or one written by `tsnpipe pack --format hdf5`.")


def _sweep(store_path: Path, index: dict, named_before: set[str] = frozenset()) -> int:
    """Delete tsnpipe's own leftovers (temp files, pending shards, shards no video names any more); return
    the next free shard number."""
    live = {entry["shard"] for entry in index["videos"].values()}
    ours = (set(index.get("pending", [])) | set(named_before)) - live
    highest = max((int(m.group(1)) for name in own_names(index) | ours if (m := SHARD_PATTERN.fullmatch(name))),
                  default=0)
    for path in store_path.iterdir():
        match = SHARD_PATTERN.fullmatch(path.name.removesuffix(".tmp"))
        if match:
            highest = max(highest, int(match.group(1)))
        if path.name in ours or path.name == f"{HDF5_INDEX}.tmp" or (match and path.name.endswith(".h5.tmp")):
            path.unlink()
    if index.get("pending"):
        index["pending"] = []
        _write_index(store_path, index)
    return highest + 1


def _write_group(shard, video) -> None:
    group = shard.create_group(f"videos/{video.video_id}")
    for kind in KINDS:
        sizes = [len(data) for data in video.images[kind]]
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        group.create_dataset(kind, data=np.frombuffer(b"".join(video.images[kind]), dtype=np.uint8))
        group.create_dataset(f"{kind}_offsets", data=offsets)


def _commit(store_path: Path, index: dict, name: str, shard, videos: list) -> None:
    """Close and rename the shard, then point the index at it and drop shards nothing points at."""
    shard.close()
    tmp = store_path / f"{name}.tmp"
    try:
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(tmp)) from None
    index["pending"] = [name]
    _write_index(store_path, index)
    os.replace(tmp, store_path / name)
    _fsync_dir(store_path)
    named_before = {entry["shard"] for entry in index["videos"].values()}
    for video in videos:
        index["videos"][video.video_id] = {
            "shard": name, "counts": video.counts, "checksum": video.checksum, "bytes": video.nbytes,
            "flow_format": video.flow_format,
        }
    index["pending"] = []
    _write_index(store_path, index)
    _sweep(store_path, index, named_before)


def write_videos(store_path: Path, videos: Iterable, shard_bytes: int) -> Iterator[tuple[object, str]]:
    """Write `VideoImages` into new shards of about `shard_bytes`; yield (video, shard name) once committed."""
    import h5py

    check_folder(store_path)
    store_path.mkdir(parents=True, exist_ok=True)
    index = read_hdf5_index(store_path)
    if not (store_path / HDF5_INDEX).is_file():
        _write_index(store_path, index)  # from the first moment, the folder says whose it is
    number = _sweep(store_path, index)
    shard, name, pending, size = None, "", [], 0
    for video in videos:
        check_free_space(store_path, video.nbytes, file_bytes=size)  # before h5py can meet a full disk or ulimit -f
        if shard is None:
            name = f"shard-{number:05d}.h5"
            shard = h5py.File(store_path / f"{name}.tmp", "w", libver="latest")
            number += 1
        _write_group(shard, video)
        pending.append(video)
        size += video.nbytes
        if size >= shard_bytes:
            _commit(store_path, index, name, shard, pending)
            yield from ((done, name) for done in pending)
            shard, pending, size = None, [], 0
    if shard is not None:
        _commit(store_path, index, name, shard, pending)
        yield from ((done, name) for done in pending)
