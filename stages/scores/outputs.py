"""Writing a user-facing output file (score file, report, curves) whole or not at all, with the user's umask.

A temp file from `tempfile.mkstemp` is private (mode 0600) whatever the umask; renamed into place as it is,
a score file or a PNG would be unreadable to the group that reads every other output. So the temp file gets
the mode `open()` would have given a new file before it is renamed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tsnpipe.stages.errors import TsnpipeError


def umask_mode() -> int:
    """The mode a new file gets from `open()`: 0666 less the process umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


CANNOT_HOLD = (errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST, errno.EISDIR, errno.EINVAL,
               errno.ENAMETOOLONG, errno.EROFS)


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output path whose folder cannot hold a new file (under a regular file, in /proc,
    no permission, read-only): one sentence naming it. The folder is created as writing it would."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        os.unlink(temp_name)
    except OSError as error:
        if error.errno not in CANNOT_HOLD:
            raise
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(path.parent) else ""
        raise TsnpipeError(f"Cannot write {path}: {error.strerror}{where}; give {what} a path in a folder you can "
                           "write.") from None
    return path


def replace_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call `write(temp_name)` to fill a temp sibling of `path`, flush it to disk, then rename it into place."""
    path = check_writable(path, "the output")
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
