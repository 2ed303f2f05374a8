"""Crash-safe file handling: temp siblings renamed into place, leftover sweeping, the workdir lock."""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_sibling(final: Path) -> Path:
    """A fresh temporary path next to `final`, on the same filesystem so the rename is atomic."""
    return final.with_name(f"{final.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` at `final`, replacing an older one; never leaves `final` half-written."""
    if final.exists():
        old = temp_sibling(final)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def sweep_temps(root: Path) -> int:
    """Remove what interrupted runs left behind below `root`; returns how many paths went."""
    if not root.exists():
        return 0
    leftovers = [p for p in root.rglob(f"*{TEMP_MARK}*")]
    for path in sorted(leftovers, key=lambda p: len(p.parts)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
    return len(leftovers)


class WorkdirBusy(Exception):
    """Another tsnpipe run holds this workdir."""


class WorkdirLock:
    """An exclusive lock on a workdir; the OS releases it when the holder dies, even by SIGKILL."""

    def __init__(self, workdir: Path, command: str):
        self.path = Path(workdir) / ".tsnpipe.lock"
        self.command = command
        self.fh = None

    def __enter__(self) -> "WorkdirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise WorkdirBusy(f"{self.path.parent} is in use by {holder}; wait for that run to finish "
                              "(or stop it) and try again.") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({self.command})")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        self.fh.truncate(0)
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
