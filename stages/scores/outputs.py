"""Writing a user-facing output file (score file, report, curves) whole or not at all, with the user's umask.

A temp file from `tempfile.mkstemp` is private (mode 0600) whatever the umask; renamed into place as it is,
a score file or a PNG would be unreadable to the group that reads every other output. So the temp file gets
the mode `open()` would have given a new file before it is renamed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def umask_mode() -> int:
    """The mode a new file gets from `open()`: 0666 less the process umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temp_name)` to fill a temp sibling of `path`, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, umask_mode())
        os.close(handle)
        write(temp_name)
        with open(temp_name, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temp_name, path)
    except OSError as error:  # a full disk while writing the temp: name the file the user asked for
        Path(temp_name).unlink(missing_ok=True)
        if error.filename in (None, temp_name):
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path
