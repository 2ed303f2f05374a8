"""A small real workdir for the training and test-protocol tests, built once per test session.

The 7 shipped sample clips (4 classes) are decoded at 10 fps with the real ffmpeg frame stage at a
short side of 64 pixels; flow is real OpenCV DIS flow (fast, unlike TV-L1) stored with the tsnpipe
quantisation; the split lists put every clip in both train and test so a model can overfit them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from packing_data import SAMPLES, write_flow
from tsnpipe.stages.frames import FrameParams, extract_video, find_videos

SHORT_SIDE = 64


def build_sample_workdir(workdir: Path) -> Path:
    """Frames, flow and a split of the sample clips under `workdir` (kept if already built). Where ffmpeg is
    missing (a GPU image), TSNPIPE_TEST_WORKDIR names a copy made elsewhere with `python tests/train_workdir.py DIR`."""
    split_dir = workdir / "splits" / "samples" / "split1"
    if (split_dir / "test.csv").is_file():
        return workdir
    prepared = os.environ.get("TSNPIPE_TEST_WORKDIR")
    if prepared:
        shutil.copytree(prepared, workdir, dirs_exist_ok=True)
        return workdir
    rows = []
    for video_id, source in find_videos(SAMPLES):
        facts = extract_video(source, workdir / "frames" / video_id, FrameParams(short_side=SHORT_SIDE))
        pairs = write_flow(video_id, workdir)
        rows.append({"video_id": video_id, "class_name": video_id.split("/")[0], "frames": facts["frames"], "flow_pairs": pairs})
    classes = sorted({row["class_name"] for row in rows})
    table = pd.DataFrame(rows)
    table.insert(1, "label", [classes.index(name) for name in table["class_name"]])
    split_dir.mkdir(parents=True)
    (split_dir / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    table.to_csv(split_dir / "train.csv", index=False)
    table.to_csv(split_dir / "test.csv", index=False)
    return workdir


if __name__ == "__main__":
    print(build_sample_workdir(Path(sys.argv[1])))
