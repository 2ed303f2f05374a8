"""The demo's task: tell a clip's playback speed (1x, 2x, 4x) from re-timed copies of real clips.

A handful of clips cannot teach action classes, but they can teach speed, and speed shows what each
stream sees: a single RGB frame of a clip looks the same at any speed, while the optical flow between
frames 0.1 s apart grows with the speed. Class folders are the speeds; each copy keeps its source clip's
name, so a split that keeps one name on one side never tests on a clip it trained on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tsnpipe.stages.frames import ffmpeg_executable

SPEEDS = (1, 2, 4)


def retime(source: Path, dest: Path, speed: int, fps: int = 25) -> None:
    """Write `source` played `speed` times faster, at a constant `fps`, without audio."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-an",
                    "-vf", f"setpts=PTS/{speed}", "-r", str(fps), "-c:v", "mpeg4", "-q:v", "2", str(dest)],
                   check=True, capture_output=True)


def make_speed_clips(samples: Path, out_dir: Path, speeds: tuple[int, ...] = SPEEDS) -> list[Path]:
    """`out_dir/<speed>x/<clip>.avi` for every clip below `samples` and speed; existing copies are kept."""
    made = []
    for source in sorted(samples.rglob("*.avi")):
        for speed in speeds:
            dest = out_dir / f"{speed}x" / f"{source.stem}.avi"
            if not dest.exists():
                tmp = dest.with_name(f".{dest.name}.tmp.avi")
                retime(source, tmp, speed)
                tmp.replace(dest)
            made.append(dest)
    return made
