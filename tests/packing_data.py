"""Tiny real workdirs for the store, pack and splits tests: frames decoded from the bundled sample clips
with the real ffmpeg, flow images from OpenCV's DIS flow quantized with the tsnpipe convention."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"
SAMPLE_IDS = [
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01",
    "SoccerJuggling/v_SoccerJuggling_g23_c01",
    "SoccerJuggling/v_SoccerJuggling_g24_c01",
    "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6",
    "wave/RATRACE_wave_f_nm_np1_fr_goo_37",
    "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0",
    "wave/TrumanShow_wave_f_nm_np1_fr_med_26",
]
BOUND = 20.0


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def extract_frames(video_id: str, workdir: Path, count: int, size: str = "170:128") -> Path:
    """Decode the first `count` frames at 10 fps into W/frames/<video_id>/img_%05d.jpg."""
    out = workdir / "frames" / video_id
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-i", str(SAMPLES / f"{video_id}.avi"), "-vf", f"fps=10,scale={size}",
         "-frames:v", str(count), "-q:v", "2", str(out / "img_%05d.jpg")],
        check=True,
    )
    return out


def write_flow(video_id: str, workdir: Path) -> int:
    """Flow pairs between consecutive frames as grayscale JPEGs flow_[xy]_%05d.jpg; returns the pair count."""
    frames = sorted((workdir / "frames" / video_id).glob("img_*.jpg"))
    out = workdir / "flow" / video_id
    out.mkdir(parents=True, exist_ok=True)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    grey = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in frames]
    for i in range(len(grey) - 1):
        flow = dis.calc(grey[i], grey[i + 1], None)
        q = np.clip(np.rint(255 * (flow + BOUND) / (2 * BOUND)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(out / f"flow_x_{i + 1:05d}.jpg"), q[..., 0])
        cv2.imwrite(str(out / f"flow_y_{i + 1:05d}.jpg"), q[..., 1])
    return len(grey) - 1


def make_workdir(workdir: Path, video_ids=SAMPLE_IDS[:3], count: int = 6, flow: bool = True) -> Path:
    """A workdir with `count` frames (and count-1 flow pairs) for each video."""
    for video_id in video_ids:
        extract_frames(video_id, workdir, count)
        if flow:
            write_flow(video_id, workdir)
    return workdir


def extracted_workdir(workdir: Path) -> Path:
    """The 7 sample clips through the real `tsnpipe extract-frames` (short side 64), as a user would run it."""
    from click.testing import CliRunner

    from tsnpipe.cli import main

    result = CliRunner().invoke(main, ["extract-frames", str(SAMPLES), "-w", str(workdir), "--size", "64",
                                       "-j", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    return workdir
