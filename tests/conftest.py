"""Fixtures shared by the tests: the bundled clips, real ffmpeg, and running the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "samples" / "videos"
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    from tsnpipe.stages.frames import ffmpeg_executable

    return ffmpeg_executable()


@pytest.fixture()
def clips(tmp_path) -> Path:
    """A private copy of three bundled real clips in class folders."""
    root = tmp_path / "videos"
    for rel in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi",
                "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / rel, root / rel)
    return root


def tsnpipe_cmd(*args: str) -> list[str]:
    """The installed console script, next to this Python."""
    return [str(Path(sys.executable).with_name("tsnpipe")), *args]


def run_tsnpipe(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, env=env, **kwargs)
