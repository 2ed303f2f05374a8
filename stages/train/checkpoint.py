"""Checkpoints: written atomically, loaded without running code, tied to the data they were trained on.

A checkpoint is a dict of tensors and plain values only (so `torch.load(weights_only=True)` reads it):
model, optimizer, scheduler, scaler, epoch, params (TrainParams as a dict), class_names, hashes
(of the split files and the store), rng (torch CPU and CUDA generator states), metrics.

Hashes: the split files (train.csv, val.csv when there is one, test.csv, classes.txt) are hashed whole. A store can hold
hundreds of GB, so each of its files is hashed whole up to 64 MiB and above that by its size and its
first and last MiB; a workdir of JPEG folders is represented by its frames and flow manifests.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from tsnpipe.stages.errors import TsnpipeError

WHOLE_FILE_LIMIT = 64 * 2**20
EDGE = 2**20


class CheckpointError(TsnpipeError):
    """A checkpoint that cannot be read or does not fit the run."""


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write `state` to a sibling temp file, flushed to disk, then rename it over `path`: a reader never sees
    half a file. A full disk raises the OSError behind torch's RuntimeError, which the CLI says in one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as file:
            try:
                torch.save(state, file)
            except RuntimeError as error:  # torch's zip writer reports a failed write as "unexpected pos"
                cause = error.__context__
                if isinstance(cause, OSError):
                    raise OSError(cause.errno, cause.strerror, str(path)) from error
                if isinstance(cause, KeyboardInterrupt):  # Ctrl-C or SIGTERM inside the writer's file.write
                    raise cause from None
                raise
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        if error.filename is None:  # fsync and flush name no file: say which checkpoint did not fit
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    finally:
        temp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with weights_only=True (no code runs), as a dict with the keys tsnpipe writes."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"There is no checkpoint {path}; give the path of a .pt file written by `tsnpipe train`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file; all mean the same here
        raise CheckpointError(f"{path} is not a readable tsnpipe checkpoint ({type(error).__name__}); train again or pick another file.") from error
    if not isinstance(state, dict) or not {"model", "params", "class_names", "epoch"} <= state.keys():
        raise CheckpointError(f"{path} is not a tsnpipe checkpoint (it lacks model, params, class_names or epoch); pick a file written by `tsnpipe train`.")
    return state


def file_hash(path: Path) -> str:
    """sha256 of a file, or for a file above 64 MiB of its size and first and last MiB."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: handle.read(EDGE), b""):
                digest.update(block)
        else:
            digest.update(str(size).encode())
            digest.update(handle.read(EDGE))
            handle.seek(size - EDGE)
            digest.update(handle.read(EDGE))
    return digest.hexdigest()


def data_hashes(split_dir: Path, store: Path) -> dict[str, str]:
    """Hashes of the split files and of the store's files (or of a workdir's frames and flow manifests)."""
    split_dir, store = Path(split_dir), Path(store)
    hashes = {}
    for name in ("train.csv", "val.csv", "test.csv", "classes.txt"):
        if (split_dir / name).is_file():
            hashes[f"split/{name}"] = file_hash(split_dir / name)
    if (store / "frames").is_dir():
        candidates = [store / "manifests" / "frames.parquet", store / "manifests" / "flow.parquet"]
    else:
        candidates = sorted(p for p in store.iterdir() if p.is_file() and p.name != "lock.mdb") if store.is_dir() else [store]
    for path in candidates:
        if path.is_file():
            hashes[f"store/{path.name}"] = file_hash(path)
    return hashes


def rng_state() -> dict:
    """The random generator states a resumed run needs to continue exactly."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
