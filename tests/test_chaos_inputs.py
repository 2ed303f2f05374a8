"""Hostile inputs: links that lead nowhere, tables of another stage under a stage's name. Each bad item is a
failed row or one sentence naming the file and the fix; the good work goes on and is never redone."""

from __future__ import annotations

import os

from chaos import FRAMES, assert_clean_process, clean_run, tree  # noqa: F401
from conftest import run_tsnpipe
from tsnpipe.manifests.table import Manifest


def test_broken_and_looping_symlinks_are_failed_rows_and_the_run_goes_on(clips, tmp_path, clean_run):
    (clips / "wave" / "gone.mp4").symlink_to(clips / "wave" / "deleted.mp4")
    (clips / "wave" / "ping.avi").symlink_to(clips / "wave" / "pong.avi")
    (clips / "wave" / "pong.avi").symlink_to(clips / "wave" / "ping.avi")
    workdir = tmp_path / "w"
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(proc, 1)
    assert "3 extracted, 0 up to date, 3 failed" in proc.stdout
    rows = Manifest(workdir, "frames").rows
    assert "does not exist; fix or remove the link" in rows["wave/gone"]["error"]
    assert "deleted.mp4" in rows["wave/gone"]["error"]
    assert "loops back on itself" in rows["wave/ping"]["error"] and "loops" in rows["wave/pong"]["error"]
    assert tree(workdir, "frames") == clean_run
    for link in ("gone.mp4", "ping.avi", "pong.avi"):
        os.unlink(clips / "wave" / link)
    again = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(again, 0)
    assert "0 extracted, 3 up to date" in again.stdout
    status = run_tsnpipe("status", "-w", str(workdir))
    assert_clean_process(status, 0)
