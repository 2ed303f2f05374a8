"""Crash-safe file handling: temp siblings renamed into place, leftover sweeping, the workdir lock."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import time
import uuid
from pathlib import Path

TEMP_MARK = ".tmp-"


NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows file systems


def temp_sibling(final: Path) -> Path:
    """A fresh temporary path next to `final`, on the same filesystem so the rename is atomic.

    The temp's name is `final`'s name plus a mark; a name already near the file system's limit is cut short
    in front of the mark, so a video named with 250 characters still gets a temp.
    """
    suffix = f"{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    room = NAME_MAX - len(suffix.encode())
    stem = final.name.encode()[:room].decode(errors="ignore")
    return final.with_name(stem + suffix)


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
    """Write `data` to a temp sibling, then rename it into place; a failed write leaves the old file."""
    tmp = temp_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise write_error(path, error) from None


def sweep_temps(root: Path, folders=None, only=None) -> int:
    """Remove what interrupted runs left behind below `root`; returns how many paths went.

    Temps are siblings of the paths they stand for, so with `folders` (the folders that hold outputs, e.g.
    the parents of every output folder) only those folders are listed, never the files inside the outputs:
    a few directory listings instead of a walk over every frame. Without it, everything below `root` is walked.
    `only(path)`, when given, picks the temps to remove (those of one shard's videos).
    """
    if not root.exists():
        return 0
    if folders is None:
        leftovers = [p for p in root.rglob(f"*{TEMP_MARK}*")]
    else:
        leftovers = []
        for folder in {Path(root), *map(Path, folders)}:
            try:
                with os.scandir(folder) as entries:
                    leftovers += [Path(entry.path) for entry in entries if TEMP_MARK in entry.name]
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as error:  # no permission: its outputs could not be written either
                raise ManifestError(f"Cannot list {folder} ({error.strerror}); give this user read and write access "
                                    "to it (or run as its owner) and run the command again.") from None
    if only is not None:
        leftovers = [path for path in leftovers if only(path)]
    for path in sorted(leftovers, key=lambda p: len(p.parts)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
    return len(leftovers)


def disk_full_reason(error: BaseException | str) -> str | None:
    """"No space left on device" (or over quota, or over a size limit) when a failure, an OSError or the
    message a tool such as ffmpeg printed, is a full disk; None otherwise."""
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return os.strerror(error.errno)
    return next((os.strerror(code) for code in DISK_FULL if os.strerror(code) in str(error)), None)


class ManifestError(Exception):
    """A bad state of the workdir's records or disk, explained in one sentence that names the file and the fix."""


class WorkdirBusy(ManifestError):
    """Another tsnpipe run holds this workdir."""


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over a file size limit


def write_error(path: Path, error: OSError, kept: str = "finished work is kept") -> ManifestError:
    """One sentence for a failed write: what, where, and what to do."""
    if error.errno in DISK_FULL:
        return ManifestError(f"Cannot write {path}: {error.strerror}; {kept}; free some space and "
                             "run the command again.")
    return ManifestError(f"Cannot write {path} ({error.strerror or error}); {kept}; check that the folder is "
                         "writable and run the command again.")


def os_error_message(error: OSError) -> str | None:
    """The sentence for an OSError that is a bad state of the disk (full, quota, read-only), else None."""
    if error.errno not in DISK_FULL + (errno.EROFS,):
        return None
    where = f" while writing {error.filename}" if error.filename else ""
    fix = "free some space" if error.errno in DISK_FULL else "make it writable"
    return f"{error.strerror}{where}; finished work is kept: {fix} and run the command again."


# A holder killed outright can leave children that inherited its lock (DataLoader or pool workers forked
# from it); they notice their parent is gone and exit within seconds. Wait that long for them, no longer.
DEAD_HOLDER_WAIT_S = 20.0


def lock_or_outlive_a_dead_holder(fh, mode: int = fcntl.LOCK_EX) -> None:
    """flock(fh, mode) without blocking; if the process the lock file names is dead, retry until its orphaned
    children let go (BlockingIOError when they do not, or when the holder is alive)."""
    deadline = time.monotonic() + DEAD_HOLDER_WAIT_S
    while True:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            fh.seek(0)
            match = re.match(r"pid (\d+)", fh.read().strip())
            if match is None or _alive(int(match[1])) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class WorkdirLock:
    """An exclusive lock on a workdir; the OS releases it when the holder dies, even by SIGKILL."""

    def __init__(self, workdir: Path, command: str):
        self.path = Path(workdir) / ".tsnpipe.lock"
        self.command = command
        self.fh = None

    def __enter__(self) -> "WorkdirLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as error:
            raise write_error(self.path, error, "nothing was started") from None
        try:
            lock_or_outlive_a_dead_holder(fh)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise WorkdirBusy(f"{self.path.parent} is in use by {holder}; wait for that run to finish "
                              "(or stop it) and try again.") from None
        except OSError as error:  # e.g. an NFS mount without a lock service (ENOLCK)
            fh.close()
            raise ManifestError(f"Cannot lock {self.path} ({error.strerror}); the file system of the workdir does not "
                                "support locks: mount it with locking, or use a local workdir.") from None
        try:  # unbuffered, so a failed write cannot fail again when the file is closed
            os.ftruncate(fh.fileno(), 0)
            os.write(fh.fileno(), f"pid {os.getpid()} ({self.command})".encode())
        except OSError as error:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
            raise write_error(self.path, error, "nothing was started") from None
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.ftruncate(self.fh.fileno(), 0)
        except OSError:
            pass  # the holder's name stays in the file; the lock itself goes with the handle
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
