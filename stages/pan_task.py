"""The demo's task: how the camera moves over a real clip (pans sideways, pans down, or holds still).

A handful of clips cannot teach action classes, but they can teach camera motion, and camera motion
shows what each stream sees. Every clip is cut to its first 2 seconds and seen through a square window
(0.6 of the frame height) that slides left to right, slides top to bottom, or stays in the middle. A
single RGB frame looks alike in all three (the same content, the window somewhere across it); the
optical flow between frames carries the motion plainly. The classes survive TSN's horizontal flip
(a flipped sideways pan is still sideways), which a left-versus-right task would not. Class folders are the pans; each copy keeps its source clip's
name, so a split that keeps one name on one side never tests on a clip it trained on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tsnpipe.stages.frames import ffmpeg_executable

SECONDS = 2.0
ACROSS = f"min(t/{SECONDS},1)"  # 0 -> 1 over SECONDS
WINDOW = {  # top-left corner of the window as ffmpeg crop expressions of t (seconds)
    "pan_sideways": (f"(iw-ow)*{ACROSS}", "(ih-oh)/2"),
    "pan_down": ("(iw-ow)/2", f"(ih-oh)*{ACROSS}"),
    "static": ("(iw-ow)/2", "(ih-oh)/2"),
}


def pan_copy(source: Path, dest: Path, pan: str, fps: int = 25) -> None:
    """Write the first SECONDS of `source` seen through a square window moving as `pan` says."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    x, y = WINDOW[pan]
    crop = f"crop=w=trunc(ih*0.3)*2:h=trunc(ih*0.3)*2:x='{x}':y='{y}'"
    subprocess.run([ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-t", str(SECONDS), "-i",
                    str(source), "-an", "-vf", crop, "-r", str(fps), "-c:v", "mpeg4", "-q:v", "2", str(dest)],
                   check=True, capture_output=True)


def make_pan_clips(samples: Path, out_dir: Path) -> list[Path]:
    """`out_dir/<pan>/<clip>.avi` for every clip below `samples` and every pan; existing copies are kept."""
    made = []
    for source in sorted(samples.rglob("*.avi")):
        for pan in WINDOW:
            dest = out_dir / pan / f"{source.stem}.avi"
            if not dest.exists():
                tmp = dest.with_name(f".{dest.stem}.tmp.avi")
                pan_copy(source, tmp, pan)
                tmp.replace(dest)
            made.append(dest)
    return made
