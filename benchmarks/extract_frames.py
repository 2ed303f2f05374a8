"""`tsnpipe extract-frames` against its floor, plain ffmpeg with the same filter chain, in one run.

The floor is what a user would type: one
`ffmpeg -i VIDEO -filter_complex [0:v]fps=fps=10:round=up,scale=...,setsar=1[v] -map [v] -q:v 2 -threads 1 DIR/img_%05d.jpg`
per video, `jobs` at a time (as `xargs -P jobs`; output folders made beforehand, so the floor pays nothing but
ffmpeg). tsnpipe runs as a user runs it: the CLI in a fresh process, manifest, content
hashes and all. Two workloads: real clips (the bundled ones, hard-linked to `--videos` files) and tiny clips
(their first 2 s at 160 px wide, `--tiny` files). Each is timed on the machine as it is ("quiet") and with two
busy processes beside it (started and stopped here), A/B alternated (ABBA), with the load average written
beside every run; the frames of both sides are compared bit for bit. Prints one JSON object.
Usage: python benchmarks/extract_frames.py [--workloads real,tiny] [--videos 203] [--tiny 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLIPS = sorted((REPO / "pipeline" / "samples" / "videos").glob("*/*.avi"))
SIZE = "256"  # the stage's default: short side 256
CHAIN = "fps=fps=10:round=up,scale=256:256:force_original_aspect_ratio=increase,setsar=1"
# as a complex graph, as tsnpipe runs it: with `-vf` ffmpeg 9 drops the last frame of 4 of the 7 bundled clips


def tiny_clips(root: Path, ffmpeg: str) -> list[Path]:
    """The bundled clips' first 2 s at 160 px wide (~20 frames each at 10 fps)."""
    made = []
    for clip in CLIPS:
        dest = root / clip.name
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(clip), "-t", "2", "-vf", "scale=160:-2",
                        "-c:v", "mpeg4", "-q:v", "5", "-an", str(dest)], check=True)
        made.append(dest)
    return made


def video_folder(root: Path, sources: list[Path], count: int) -> list[Path]:
    """`count` videos in 20 class folders, hard links to `sources` in turn."""
    videos = []
    for i in range(count):
        path = root / f"class_{i % 20:02d}" / f"v_{i:05d}_{sources[i % len(sources)].stem}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(sources[i % len(sources)], path)
        videos.append(path)
    return videos


def plain_ffmpeg(video_dir: Path, videos: list[Path], out: Path, jobs: int, ffmpeg: str) -> None:
    folders = [out / video.relative_to(video_dir).with_suffix("") for video in videos]
    for folder in folders:
        folder.mkdir(parents=True)

    def one(pair: tuple[Path, Path]) -> int:
        return subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(pair[0]),
                               "-filter_complex", f"[0:v]{CHAIN}[v]", "-map", "[v]", "-q:v", "2", "-threads", "1",
                               str(pair[1] / "img_%05d.jpg")]).returncode

    with ThreadPoolExecutor(jobs) as pool:
        if any(pool.map(one, zip(videos, folders))):
            raise SystemExit("plain ffmpeg failed on a video")


def tsnpipe_run(video_dir: Path, videos: list[Path], out: Path, jobs: int, ffmpeg: str) -> None:
    tsnpipe = str(Path(sys.executable).with_name("tsnpipe"))
    proc = subprocess.run([tsnpipe, "extract-frames", str(video_dir), "-w", str(out), "--size", SIZE, "-j", str(jobs),
                           "--no-progress"], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tsnpipe failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def digest(folder: Path) -> str:
    h = hashlib.blake2b()
    for path in sorted(folder.rglob("*.jpg")):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def timed(fn, *args) -> dict:
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    said = fn(*args)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    run = {"s": round(wall, 2), "cpu_s": round(cpu, 2), "load_before": round(load, 2)}
    return {**run, "summary": said} if said else run


def busy(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(name: str, video_dir: Path, videos: list[Path], work: Path, jobs: int, repeats: int, ffmpeg: str) -> dict:
    sides = {"ffmpeg": plain_ffmpeg, "tsnpipe": tsnpipe_run}
    report = {"videos": len(videos)}
    for condition, hogs in (("quiet", 0), ("two busy processes", 2)):
        runs = {side: [] for side in sides}
        procs = busy(hogs)
        try:
            time.sleep(1.0 if hogs else 0.0)
            for r in range(repeats):
                order = ["ffmpeg", "tsnpipe"] if r % 2 == 0 else ["tsnpipe", "ffmpeg"]  # ABBA
                for side in order:
                    out = work / f"{name}-{condition[:5]}-{side}-{r}"
                    runs[side].append(timed(sides[side], video_dir, videos, out, jobs, ffmpeg))
                    if r == 0 and condition == "quiet":
                        runs[side][-1]["frames"] = sum(1 for _ in out.rglob("*.jpg"))
                        runs[side][-1]["digest"] = digest(out / "frames" if side == "tsnpipe" else out)
                    shutil.rmtree(out)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
        best = {side: min(run["s"] for run in runs[side]) for side in sides}
        median = {side: sorted(run["s"] for run in runs[side])[len(runs[side]) // 2] for side in sides}
        report[condition] = {"runs": runs, "speed_vs_ffmpeg_median": round(median["ffmpeg"] / median["tsnpipe"], 3),
                             "speed_vs_ffmpeg_each": [round(a["s"] / b["s"], 3)
                                                      for a, b in zip(runs["ffmpeg"], runs["tsnpipe"])]}
    quiet = report["quiet"]["runs"]
    report["same_frames"] = quiet["ffmpeg"][0]["digest"] == quiet["tsnpipe"][0]["digest"]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="real,tiny", help="real, tiny or both")
    parser.add_argument("--videos", type=int, default=203, help="real clips (the 7 bundled ones repeated)")
    parser.add_argument("--tiny", type=int, default=1000, help="tiny clips")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side in each condition")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    from tsnpipe.stages.frames import ffmpeg_executable

    ffmpeg = ffmpeg_executable()
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ffmpeg": ffmpeg, "jobs": args.jobs,
               "size": SIZE, "fps": 10, "filter_chain": CHAIN, "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.workloads.split(","):
            if name == "real":
                videos = video_folder(tmp / "real", CLIPS, args.videos)
            else:
                (tmp / "tiny-src").mkdir()
                videos = video_folder(tmp / "tiny", tiny_clips(tmp / "tiny-src", ffmpeg), args.tiny)
            results["workloads"][name] = measure(name, tmp / name, videos, tmp / "out", args.jobs, args.repeats, ffmpeg)
            print(json.dumps({name: results["workloads"][name]}), file=sys.stderr, flush=True)
    results["load_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
