"""Throughput of `tsnpipe extract-frames` against the plain ffmpeg command line doing the same work.

Both decode the same 320x240 MPEG-4 UCF101 clips, sample 10 fps, resize to 340x256 and write JPEGs at
qscale 2, one ffmpeg thread per video; "all cores" runs one video per core. Prints one JSON object.
Usage: python benchmarks/extract_frames.py [--copies 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIPS = sorted((REPO / "pipeline" / "samples" / "videos").glob("*/v_*.avi"))  # the UCF101 clips, 320x240 MPEG-4


def make_videos(root: Path, copies: int) -> list[Path]:
    videos = []
    for i in range(copies):
        for clip in CLIPS:
            dest = root / clip.parent.name / f"{clip.stem}_copy{i}.avi"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, dest)
            videos.append(dest)
    return videos


def plain_ffmpeg(videos: list[Path], out: Path, jobs: int, ffmpeg: str) -> int:
    def one(video: Path) -> None:
        target = out / video.parent.name / video.stem
        target.mkdir(parents=True)
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-i", str(video), "-vf", "fps=10,scale=340:256",
                        "-q:v", "2", "-threads", "1", str(target / "img_%05d.jpg")], check=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, videos))
    return sum(1 for _ in out.rglob("*.jpg"))


def tsnpipe_run(video_dir: Path, workdir: Path, jobs: int) -> int:
    tsnpipe = str(Path(sys.executable).with_name("tsnpipe"))
    subprocess.run([tsnpipe, "extract-frames", str(video_dir), "-w", str(workdir), "--size", "340x256",
                    "-j", str(jobs), "--no-progress"], check=True, capture_output=True)
    return sum(1 for _ in (workdir / "frames").rglob("*.jpg"))


def timed(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    frames = fn(*args)
    return time.perf_counter() - start, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=6, help="copies of each clip (more work, steadier figures)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median is reported")
    args = parser.parse_args()
    from tsnpipe.stages.frames import ffmpeg_executable

    ffmpeg = ffmpeg_executable()
    cores = os.cpu_count() or 1
    results = {"machine": f"{platform.machine()}, {cores} cores, {platform.system()}", "ffmpeg": ffmpeg,
               "videos": None, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = make_videos(tmp / "videos", args.copies)
        results["videos"] = len(videos)
        for jobs in sorted({1, cores}):
            rows = {"ffmpeg": [], "tsnpipe": []}
            for r in range(args.repeats):  # interleaved, so machine noise hits both alike
                rows["ffmpeg"].append(timed(plain_ffmpeg, videos, tmp / f"ff{jobs}_{r}", jobs, ffmpeg))
                rows["tsnpipe"].append(timed(tsnpipe_run, tmp / "videos", tmp / f"ts{jobs}_{r}", jobs))
            entry = {}
            for name, runs in rows.items():
                seconds = sorted(s for s, _ in runs)[len(runs) // 2]
                frames = runs[0][1]
                entry[name] = {"seconds": round(seconds, 3), "frames": frames,
                               "frames_per_s": round(frames / seconds, 1), "videos_per_s": round(len(videos) / seconds, 2)}
            entry["ratio_tsnpipe_to_ffmpeg"] = round(entry["tsnpipe"]["frames_per_s"] / entry["ffmpeg"]["frames_per_s"], 3)
            results["runs"][f"{jobs}_jobs"] = entry
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
