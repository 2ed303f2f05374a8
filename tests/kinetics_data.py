"""A tiny Kinetics in the CVDF mirror's layout: the three Kinetics-400 clips of tests/data/kinetics under
`train/` and `val/` as `<youtube_id>_<start:06d>_<end:06d>.mp4`, frames extracted by the real
`tsnpipe extract-frames`, and the official CSVs' format written by the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from tsnpipe.cli import main

KINETICS = Path(__file__).parent / "data" / "kinetics"
LABEL_MAP = KINETICS / "label_map_k400.txt"
HEADER = "label,youtube_id,time_start,time_end,split"
# (subset folder of the mirror, youtube id, start, end, label): labels of our choosing, in Kinetics-400's names
CLIPS = [
    ("train", "R6llTwEh07w", 10, 20, "abseiling"),
    ("train", "SOX5yA1l24A", 3, 13, "air drumming"),
    ("val", "WUzgd7C1pWA", 100, 110, "air drumming"),
]
GONE = ("train", "gone0000000", 0, 10, "abseiling")  # listed, never downloaded: YouTube took it down


def clip_id(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def cvdf_videos(folder: Path) -> Path:
    """The three clips renamed into the mirror's flat train/ and val/ folders."""
    for subset, youtube_id, start, end, _ in CLIPS:
        (folder / subset).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(KINETICS / f"{youtube_id}.mp4", folder / subset / f"{clip_id(youtube_id, start, end)}.mp4")
    return folder


def csv_line(clip) -> str:
    subset, youtube_id, start, end, label = clip
    label = f'"{label}"' if "," in label else label
    return f"{label},{youtube_id},{start},{end},{'train' if subset == 'train' else 'val'}\n"


def write_csvs(folder: Path, train=None, validate=None, test: str | None = None) -> Path:
    """train.csv and validate.csv (default: the clips above plus one gone from YouTube), and test.csv if given."""
    folder.mkdir(parents=True, exist_ok=True)
    train = [c for c in CLIPS if c[0] == "train"] + [GONE] if train is None else train
    validate = [c for c in CLIPS if c[0] == "val"] if validate is None else validate
    (folder / "train.csv").write_text(HEADER + "\n" + "".join(map(csv_line, train)))
    (folder / "validate.csv").write_text(HEADER + "\n" + "".join(map(csv_line, validate)))
    if test is not None:
        (folder / "test.csv").write_text(test)
    return folder


def extracted_kinetics(root: Path) -> Path:
    """root/videos (the mirror's layout) extracted into root/W at a short side of 32."""
    videos = cvdf_videos(root / "videos")
    result = CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(root / "W"), "--size", "32", "-j", "2",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    return root
