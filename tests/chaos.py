"""Helpers of the chaos tests: run the real CLI, compare trees of files, assert one-line errors."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsnpipe.cli import main

FRAMES = ("--fps", "1", "--size", "32", "-j", "1", "--no-progress")


def tree(root: Path, below: str = "") -> dict[str, str]:
    """Relative path -> sha256 of every file under root/below (what a user would compare)."""
    base = root / below if below else root
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=True)


def assert_one_line_error(result, *words: str) -> str:
    """Exit code 1, no traceback, a single `Error:` line that says what happened."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_clean_process(proc: subprocess.CompletedProcess, code: int = 1) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture()
def clean_run(clips, tmp_path) -> dict[str, str]:
    """The frames of an uninterrupted run: what every interrupted one must end up with."""
    workdir = tmp_path / "clean"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    return tree(workdir, "frames")


@pytest.fixture()
def extracted(clips, tmp_path) -> Path:
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    return workdir


def file_size_limit(limit: int):
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) like on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def full_disk_at_every_fsync(monkeypatch, *args: str) -> int:
    """Run `tsnpipe args` again and again with an ENOSPC injected at its 1st, 2nd, ... fsync until a run
    gets through all of its fsyncs; each interrupted run must end in one sentence. Returns how many
    fsyncs were failed in turn."""
    real_fsync, calls, nth = os.fsync, {"n": 0}, 1
    while True:
        calls["n"] = 0

        def full_at_nth(fd, nth=nth):
            calls["n"] += 1
            if calls["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", full_at_nth)
        result = invoke(*args)
        monkeypatch.setattr(os, "fsync", real_fsync)
        if calls["n"] < nth:
            return nth - 1  # this run wrote everything without reaching the injected failure
        assert_one_line_error(result, "No space left on device")
        nth += 1
