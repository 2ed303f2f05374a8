"""One video's features on disk: an HDF5 file or .npy files in the video's own folder, and the linked NAME.h5.

Layout (`W/features/NAME/`, one folder per video as every per-video stage has):
- hdf5: `<video_id>/features.h5` with one float32 dataset per stream (`rgb`, `flow`: T x D) and `times`
  (T, seconds), each stream's dataset carrying the checkpoint's content hash, layer, interval, modality,
  crops and crop size as attributes;
- npy: `<video_id>/rgb.npy`, `flow.npy` (T x D float32) and `times.npy`, as video_features writes them.

Why a file per video and not one HDF5 file holding every video: adding a dataset to a shared file
rewrites its metadata in place, so a kill mid-write can corrupt every video in it, and a crash-safe
shared file would have to be copied whole per video (240,000 times). A video's file is written in its
temporary folder and renamed into place by the runner, so a kill loses only the videos in flight and a
rerun touches nothing else. `W/features/NAME.h5` then gives the one-file view: an index of HDF5
external links, `/<video_id>` -> `NAME/<video_id>/features.h5`, rewritten once per run (a few seconds
at 240,000 videos, temp file and rename) from the manifest's done rows. h5py follows the links, so
`h5py.File("W/features/NAME.h5")["<video_id>/rgb"]` reads a video's T x D features.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from tsnpipe.stages.disk import write_fsynced

FORMATS = ("hdf5", "npy")
FEATURE_FILE = "features.h5"
TIMES = "times"


def write_video(out_dir: Path, features: dict[str, np.ndarray], times: np.ndarray, fmt: str,
                attrs: dict[str, dict]) -> int:
    """Write one video's features (stream name -> T x D) and snippet times into `out_dir` (created here); returns
    the bytes written, which its row records so that a damaged (truncated) file is found and redone.

    Each file is built in memory and written by one plain write loop: a full disk or the file size limit
    (`ulimit -f`) is then one OSError naming the file, where h5py, meeting the failed write itself, printed
    tracebacks from its clean-up (or crashed) and numpy said only "2048 requested and 480 written"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        files = {f"{name}.npy": np.ascontiguousarray(array, dtype=np.float32) for name, array in features.items()}
        files[f"{TIMES}.npy"] = np.asarray(times, dtype=np.float64)
        total = 0
        for name, array in files.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            total += write_file(out_dir / name, buffer.getbuffer())
        return total
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for name, array in features.items():
            dataset = handle.create_dataset(name, data=np.asarray(array, dtype=np.float32), track_times=False)
            for key, value in attrs[name].items():
                dataset.attrs[key] = value
        handle.create_dataset(TIMES, data=np.asarray(times, dtype=np.float64), track_times=False)
        handle[TIMES].attrs["unit"] = "seconds"
    return write_file(out_dir / FEATURE_FILE, buffer.getbuffer())


def write_file(path: Path, data: memoryview) -> int:
    """`data` into `path`, fsynced; an OSError names the file (the temp folder it is in goes with the row)."""
    return write_fsynced(path, data)


def written_bytes(folder: Path) -> int | None:
    """The bytes of the files in a video's folder as they are now (None: no such folder)."""
    try:
        with os.scandir(folder) as entries:
            return sum(entry.stat(follow_symlinks=False).st_size for entry in entries
                       if entry.is_file(follow_symlinks=False))
    except OSError:
        return None


def read_video(folder: Path, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(stream name -> T x D, times) of one video's folder, whichever format it was written in."""
    folder = Path(folder)
    if (folder / FEATURE_FILE).is_file():
        import h5py

        with h5py.File(folder / FEATURE_FILE, "r") as handle:
            return {name: handle[name][()] for name in names}, handle[TIMES][()]
    return {name: np.load(folder / f"{name}.npy") for name in names}, np.load(folder / f"{TIMES}.npy")


def write_links(path: Path, folder_name: str, video_ids: list[str]) -> None:
    """The index file `path` (W/features/NAME.h5): one external link per video to its features.h5."""
    import h5py

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as handle:
            for video_id in video_ids:
                handle[video_id] = h5py.ExternalLink(f"{folder_name}/{video_id}/{FEATURE_FILE}", "/")
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sweep_link_temps(path: Path) -> None:
    """Remove index temps a killed run left beside `path`."""
    for leftover in Path(path).parent.glob(f".{Path(path).name}.tmp-*"):
        leftover.unlink(missing_ok=True)
