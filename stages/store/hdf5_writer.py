"""Write videos into a sharded HDF5 store: a folder (`*.hdf5`) of shard files plus `index.json`.

A shard `shard-00001.h5` holds group `/videos/<video_id>` per video with, per kind, one uint8 blob of the
concatenated image bytes (`rgb` JPEG, `flow_x`, `flow_y` JPEG or PNG) and an int64 offsets array (`rgb_offsets`, ...):
image p is blob[offsets[p]:offsets[p+1]], one read per image; in the `pairs` flow layout (`flow_pairs`) the
flow is one blob `flow_xy` of pair arrays and its offsets instead. `index.json` maps each video to its shard,
counts, checksum, flow image format and (for `pairs`) flow layout and size.

Why shards: a pack run writes its videos into new shards only (each closed at about `shard_bytes`), so
adding videos never rewrites the existing files. Why a kill cannot tear the store: a shard is written
under a `.tmp` name, fsynced and renamed; only then does the index name its videos, and the index is the
only thing readers trust. The index is `index.json` plus `index.log`: a shard commit appends one
checksummed, fsynced line to the log (its videos), so a commit costs the size of that shard's entries,
not of the whole index (which a 240,000-video store would otherwise rewrite at each of hundreds of
commits); `index.json` is written whole (write, fsync, os.replace) once at the start of a run that finds
a log, and once at its end. Before a shard is renamed, a `pending` line names it, so a kill between the
rename and the commit line leaves a shard the index still names; a torn last line (a kill or a full disk
mid-append) is no record. A kill loses at most the shard being written; its leftovers
(`shard-NNNNN.h5.tmp`, `index.json.tmp`, a pending shard) are swept at the next run.
A re-packed video's new entry lives in the new shard; a shard the index
named before and no video names now is deleted (space of an old version inside a still-used shard is
reclaimed only when all its videos have moved on).

tsnpipe deletes only what it made: the sweep removes only those names, and `check_folder` refuses a
folder holding anything else (a user's `x.tmp`, or a `shard-00007.h5` the index never named).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tsnpipe.stages.disk import write_fsynced
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.flow_pairs import PAIRS
from tsnpipe.stages.store.pack import check_free_space
from tsnpipe.stages.store.reader import HDF5_INDEX, HDF5_INDEX_LOG, KINDS, index_log_line, read_hdf5_index

SHARD_PATTERN = re.compile(r"shard-(\d{5})\.h5")


def stored_videos(store_path: Path) -> dict[str, dict]:
    """video_id -> {"checksum", "location"} of every video the index names (empty when there is no store yet)."""
    index = read_hdf5_index(store_path)
    return {vid: {"checksum": e["checksum"], "location": e["shard"], "flow_layout": e.get("flow_layout", "images")}
            for vid, e in index["videos"].items()}


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


def _append_log(store_path: Path, record: dict) -> None:
    """Append one record to the index log and make it durable before returning."""
    path = store_path / HDF5_INDEX_LOG
    try:
        with open(path, "ab") as handle:
            handle.write(index_log_line(record))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:  # a torn line is no record: the index stays as it was before this commit
        raise OSError(error.errno, error.strerror, str(path)) from None


def _fold_log(store_path: Path, index: dict) -> None:
    """Write the index whole with the log's records in it, then drop the log."""
    if (store_path / HDF5_INDEX_LOG).exists():
        _write_index(store_path, index)
        (store_path / HDF5_INDEX_LOG).unlink()
        _fsync_dir(store_path)


def own_names(index: dict) -> set[str]:
    """The file names a store with this index may hold: the index, the shards it names, and their temps."""
    shards = {entry["shard"] for entry in index["videos"].values()} | set(index.get("pending", []))
    return {HDF5_INDEX, f"{HDF5_INDEX}.tmp", HDF5_INDEX_LOG} | shards | {f"{name}.tmp" for name in shards}


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
    entries = [("rgb", video.images["rgb"]), (PAIRS, video.pairs)] if video.pairs is not None else \
        [(kind, video.images[kind]) for kind in KINDS]
    for kind, blobs in entries:
        sizes = [len(data) for data in blobs]
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        group.create_dataset(kind, data=np.frombuffer(b"".join(blobs), dtype=np.uint8))
        group.create_dataset(f"{kind}_offsets", data=offsets)


WRITE_BYTES = 64 << 20  # a shard goes to the disk in writes of this size


class Shard:
    """A shard built in memory: HDF5 never writes to the disk itself, so a full disk, a quota or a file size
    limit meets our own write of the finished file (one OSError, the temp removed) instead of h5py, which
    cannot recover from a failed write (it crashed in its clean-up). Memory: about one shard, as the images
    of the shard's videos took before."""

    def __init__(self, name: str):
        import h5py

        self.name, self.buffer = name, io.BytesIO()
        self.file = h5py.File(self.buffer, "w", libver="latest")

    def save(self, path: Path) -> None:
        """Close the HDF5 file and write its bytes to `path`, fsynced; on failure `path` is removed."""
        self.file.close()
        data = self.buffer.getbuffer()
        try:
            write_fsynced(path, data, WRITE_BYTES)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        except BaseException:  # Ctrl-C, SIGTERM: no half-written shard is left behind
            path.unlink(missing_ok=True)
            raise
        finally:
            data.release()
            self.buffer = None


def _commit(store_path: Path, index: dict, shard: Shard, videos: list, live: dict[str, int]) -> None:
    """Write and rename the shard, then append its videos to the index log and delete the shards no video
    names any more (`live`: videos per shard, kept up to date here)."""
    name, tmp = shard.name, store_path / f"{shard.name}.tmp"
    try:
        shard.save(tmp)
        _append_log(store_path, {"pending": name})
        os.replace(tmp, store_path / name)
    except BaseException:  # a stop between the write and the rename (the pending record lets the sweep clear it)
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(store_path)
    entries = {video.video_id: {"shard": name, "counts": video.counts, "checksum": video.checksum,
                                "bytes": video.nbytes, "flow_format": video.flow_format, **video.layout_meta}
               for video in videos}
    _append_log(store_path, {"commit": name, "videos": entries})
    emptied = set()
    for video_id in entries:
        if old := index["videos"].get(video_id):
            live[old["shard"]] -= 1
            if live[old["shard"]] == 0:
                emptied.add(old["shard"])
    index["videos"].update(entries)
    index["pending"] = []
    live[name] = live.get(name, 0) + len(entries)
    for old_shard in emptied - {name}:
        (store_path / old_shard).unlink(missing_ok=True)


def write_videos(store_path: Path, videos: Iterable, shard_bytes: int) -> Iterator[tuple[object, str]]:
    """Write `VideoImages` into new shards of about `shard_bytes`; yield (what was stored of each video, shard
    name) once committed."""
    check_folder(store_path)
    store_path.mkdir(parents=True, exist_ok=True)
    index = read_hdf5_index(store_path)
    if not (store_path / HDF5_INDEX).is_file():
        _write_index(store_path, index)  # from the first moment, the folder says whose it is
    _fold_log(store_path, index)
    number = _sweep(store_path, index)
    live: dict[str, int] = {}
    for entry in index["videos"].values():
        live[entry["shard"]] = live.get(entry["shard"], 0) + 1
    shard, pending, size = None, [], 0
    for video in videos:
        check_free_space(store_path, video.nbytes, file_bytes=size)  # told before the shard is built
        if shard is None:
            shard = Shard(f"shard-{number:05d}.h5")
            number += 1
        _write_group(shard.file, video)
        pending.append(video.stored())  # the images are in the shard now
        size += video.nbytes
        if size >= shard_bytes:
            _commit(store_path, index, shard, pending, live)
            yield from ((done, shard.name) for done in pending)
            shard, pending, size = None, [], 0
    if shard is not None:
        _commit(store_path, index, shard, pending, live)
        yield from ((done, shard.name) for done in pending)
    _fold_log(store_path, index)
