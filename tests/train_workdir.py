"""A small real workdir for the training and test-protocol tests, built once per test session.

The 7 shipped sample clips (4 classes) are decoded at 10 fps with the real ffmpeg frame stage at a
short side of 64 pixels; flow is real OpenCV DIS flow (fast, unlike TV-L1) stored with the tsnpipe
quantisation; the split lists put every clip in both train and test so a model can overfit them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from tsnpipe.stages.frames import FrameParams, extract_video, find_videos

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"
SHORT_SIDE = 64
BOUND = 20.0


def quantise(component: np.ndarray) -> np.ndarray:
    return np.clip(np.round(255 * (component + BOUND) / (2 * BOUND)), 0, 255).astype(np.uint8)


def write_flow(frames_dir: Path, flow_dir: Path) -> int:
    """Flow pairs between consecutive frames, as flow_x/flow_y JPEGs; returns the number of pairs."""
    flow_dir.mkdir(parents=True)
    names = sorted(frames_dir.glob("img_*.jpg"))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    previous = cv2.imread(str(names[0]), cv2.IMREAD_GRAYSCALE)
    for number, name in enumerate(names[1:], start=1):
        current = cv2.imread(str(name), cv2.IMREAD_GRAYSCALE)
        flow = dis.calc(previous, current, None)
        cv2.imwrite(str(flow_dir / f"flow_x_{number:05d}.jpg"), quantise(flow[..., 0]))
        cv2.imwrite(str(flow_dir / f"flow_y_{number:05d}.jpg"), quantise(flow[..., 1]))
        previous = current
    return len(names) - 1


def build_sample_workdir(workdir: Path) -> Path:
    """Frames, flow and a split of the sample clips under `workdir` (kept if already built)."""
    split_dir = workdir / "splits" / "samples" / "split1"
    if (split_dir / "test.csv").is_file():
        return workdir
    rows = []
    for video_id, source in find_videos(SAMPLES):
        facts = extract_video(source, workdir / "frames" / video_id, FrameParams(short_side=SHORT_SIDE))
        pairs = write_flow(workdir / "frames" / video_id, workdir / "flow" / video_id)
        rows.append({"video_id": video_id, "class_name": video_id.split("/")[0], "frames": facts["frames"], "flow_pairs": pairs})
    classes = sorted({row["class_name"] for row in rows})
    table = pd.DataFrame(rows)
    table.insert(1, "label", [classes.index(name) for name in table["class_name"]])
    split_dir.mkdir(parents=True)
    (split_dir / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    table.to_csv(split_dir / "train.csv", index=False)
    table.to_csv(split_dir / "test.csv", index=False)
    return workdir
