"""The demo's task: how the camera moves over a real clip (pans sideways, pans up or down, or holds still).

A handful of clips cannot teach action classes, but they can teach camera motion, and camera motion
shows what each stream sees. Every clip is cut to its first SECONDS and seen through a square window
(0.6 of the frame height) that slides sideways (left to right, or right to left), slides vertically
(down, or up), or stays put (left or right of the middle): two copies per class and clip. A single RGB
frame looks alike in all of them (the same content, the window somewhere across it); the optical flow
between frames carries the motion plainly. The classes survive TSN's horizontal flip (a flipped
sideways pan is still sideways), which a left-versus-right task would not.

Each copy is named `<clip>__<variant>.avi`, so GROUP_REGEX names its source clip: a split that keeps a
group on one side across all classes never tests on a clip it trained on. `write_validation_split`
then holds a few of the training clips out, so the demo picks its best epochs and its fusion weights on
clips that are neither trained on nor tested on.
"""

from __future__ import annotations

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tsnpipe.stages.frames import ffmpeg_executable

SECONDS = 1.6  # the shortest bundled clip lasts 1.63 s
GROUP_REGEX = "^(.*)__"  # `<clip>__<variant>`: the group is the source clip
_P = f"min(t/{SECONDS},1)"  # 0 -> 1 over SECONDS
_SIDE = "min(iw-ow,ow)"  # a sideways pan travels one window width at most, so wide clips do not pan faster
WINDOW = {  # class -> variant -> top-left corner of the window, as ffmpeg crop expressions of t (seconds)
    "pan_sideways": {
        "rightward": (f"(iw-ow)/2+{_SIDE}*({_P}-0.5)", "(ih-oh)/2"),
        "leftward": (f"(iw-ow)/2-{_SIDE}*({_P}-0.5)", "(ih-oh)/2"),
    },
    "pan_vertical": {
        "downward": ("(iw-ow)/2", f"(ih-oh)*{_P}"),
        "upward": ("(iw-ow)/2", f"(ih-oh)*(1-{_P})"),
    },
    "static": {
        "left": ("(iw-ow)/2-ow/4", "(ih-oh)/2"),
        "right": ("(iw-ow)/2+ow/4", "(ih-oh)/2"),
    },
}


def pan_copy(source: Path, dest: Path, pan: str, variant: str, fps: int = 25) -> None:
    """Write the first SECONDS of `source` seen through a square window moving as `pan`/`variant` say."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    x, y = WINDOW[pan][variant]
    crop = f"crop=w=trunc(ih*0.3)*2:h=trunc(ih*0.3)*2:x='{x}':y='{y}'"
    subprocess.run([ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-t", str(SECONDS), "-i",
                    str(source), "-an", "-vf", crop, "-r", str(fps), "-c:v", "mpeg4", "-q:v", "2", str(dest)],
                   check=True, capture_output=True)


def _make(job: tuple[Path, Path, str, str]) -> Path:
    source, dest, pan, variant = job
    if not dest.exists():
        tmp = dest.with_name(f".{dest.stem}.tmp.avi")
        pan_copy(source, tmp, pan, variant)
        tmp.replace(dest)
    return dest


def make_pan_clips(samples: Path, out_dir: Path, jobs: int = 1) -> list[Path]:
    """`out_dir/<pan>/<clip>__<variant>.avi` for every clip below `samples`, pan and variant; existing copies are
    kept. `jobs` ffmpeg processes run at once."""
    todo = [(source, out_dir / pan / f"{source.stem}__{variant}.avi", pan, variant)
            for source in sorted(samples.rglob("*.avi")) for pan, variants in WINDOW.items() for variant in variants]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_make, todo))


def write_validation_split(workdir: Path, number: int = 1, val_number: int = 2, held_out: int = 1,
                           seed: int = 0) -> Path:
    """`W/splits/folders/split<val_number>`: split `number`'s training videos, the copies of `held_out` of its
    source clips (drawn with `seed`) moved to the test side. Training on it picks its best epoch on those
    clips, and testing on it gives validation scores for `fuse --search-weights`; split `number`'s test
    clips stay unseen. Returns the folder."""
    import re

    import pandas as pd

    from tsnpipe.stages.splits.tables import Split, split_dir, split_files, write_split_files

    source = split_dir(workdir, "folders", number)
    train = pd.read_csv(source / "train.csv", dtype={"video_id": str, "class_name": str})
    classes = (source / "classes.txt").read_text().split()
    group = train["video_id"].map(lambda video_id: re.match(GROUP_REGEX, video_id.split("/")[-1])[1])
    groups = sorted(set(group))
    chosen = set(random.Random(f"validation/{seed}").sample(groups, min(held_out, len(groups) - 1)))
    held = group.isin(chosen)
    missing = pd.DataFrame({"subset": [], "video_id": [], "reason": []})
    split = Split("folders", val_number, classes, train[~held].reset_index(drop=True),
                  train[held].reset_index(drop=True), missing,
                  {"validation_of": number, "held_out": sorted(chosen), "seed": seed})
    return write_split_files(split_dir(workdir, "folders", val_number), split_files(split))
