"""One fsynced write of bytes built in memory, for the stores and the features, whose libraries (h5py) cannot
recover from a failed write of their own: a full disk, a quota or a size limit meets this write instead, as one
OSError that names the file."""

from __future__ import annotations

import os
from pathlib import Path


def write_fsynced(path: Path, data: memoryview | bytes, chunk: int = 8 << 20) -> int:
    """`data` into `path` in writes of `chunk` bytes, fsynced; returns the bytes written. An OSError names `path`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:written + chunk])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    return len(data)
