"""`tsnpipe build-splits --kinetics` at Kinetics-400's size, on a synthetic workdir; prints JSON.

The CSVs list `--train` training and `--val` validation clips of 400 classes in the official format; the
frames manifest (written through tsnpipe's own `Manifest`) holds `--extracted` of them in the CVDF
mirror's train/ and val/ folders, some failed and some no CSV names, as a real download leaves them.
Measured: the command as a real process (wall seconds of the whole process, of the command after its
imports, CPU seconds of the process, peak RSS), with and without `--val-ratio`, and its phases in this
process. On a shared machine compare CPU seconds: wall time there includes waiting for a core.

    python benchmarks/kinetics_splits.py --train 240000 --val 20000 --extracted 240000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = "label,youtube_id,time_start,time_end,split\n"


def synthesize(root: Path, train: int, val: int, extracted: int, classes: int = 400) -> tuple[Path, Path]:
    """(csv folder, workdir): CSVs of train + val clips, a frames manifest of `extracted` videos."""
    from tsnpipe.manifests.table import Manifest

    csv_dir, workdir = root / "csv", root / "W"
    csv_dir.mkdir(parents=True)
    names = [f"class {i:03d}" for i in range(classes)]
    clips = [(("train" if i < train else "val"), f"y{i:010d}", i % 300, i % 300 + 10, names[i % classes])
             for i in range(train + val)]
    for subset, name in (("train", "train.csv"), ("val", "validate.csv")):
        with open(csv_dir / name, "w") as out:
            out.write(HEADER)
            out.writelines(f"{label},{yt},{start},{end},{s}\n" for s, yt, start, end, label in clips if s == subset)
    step = (train + val) / extracted
    manifest = Manifest(workdir, "frames")
    for n in range(extracted):
        subset, yt, start, end, _ = clips[int(n * step)]
        video_id = f"{subset}/{yt}_{start:06d}_{end:06d}" if n % 300 else f"extra/unlisted_{n:08d}"
        failed = n % 250 == 1  # 0.4%: "moov atom not found" and the like
        manifest.rows[video_id] = {
            "video_id": video_id, "source": f"/data/kinetics400/{video_id}.mp4", "params_hash": "0" * 16,
            "started_at": "2026-12-04T00:00:00", "status": "failed" if failed else "done",
            "error": "moov atom not found" if failed else None, "output": None if failed else f"frames/{video_id}",
            "frames": 0 if failed else 100, "width": 340, "height": 256, "duration": 10.0, "src_width": 640,
            "src_height": 480, "src_fps": 30.0, "fingerprint": json.dumps({"size": 1_000_000, "mtime_ns": n}), "seconds": 1.0,
        }
    manifest.compact()
    return csv_dir, workdir


def run_command(args: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one `tsnpipe` process. The peak is /proc's VmHWM: getrusage's ru_maxrss
    survives exec on Linux, so a child of this (large) process would report this process's peak."""
    code = ("import resource, sys, time; from tsnpipe.cli import main; t = time.perf_counter()\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    u = resource.getrusage(resource.RUSAGE_SELF)\n"
            "    hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "    print('WALL', time.perf_counter() - t, 'RSS', hwm, 'CPU', u.ru_utime + u.ru_stime, file=sys.stderr)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stderr)
    inner = done.stderr.split("WALL")[-1].split()
    return {"wall_s": round(wall, 2), "command_s": round(float(inner[0]), 2), "process_cpu_s": round(float(inner[4]), 2),
            "peak_rss_mb": round(int(inner[2]) / 1024),
            "output": done.stdout.strip().splitlines()[-1]}


def phases(csv_dir: Path, workdir: Path) -> dict:
    """Seconds of each step of the command, in this process."""
    from tsnpipe.manifests.columns import load_columns
    from tsnpipe.stages.splits.kinetics import match_extracted, read_kinetics
    from tsnpipe.stages.splits.tables import build_split, split_files
    from tsnpipe.stages.splits.validation import carve_validation

    times, t = {}, time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = round(now - t, 3)
        t = now

    frames = load_columns(workdir, "frames", ["video_id", "status", "frames"])
    lap("load_frames_manifest")
    version, classes, listed = read_kinetics(csv_dir, 400)
    lap("read_csvs")
    entries, _ = match_extracted(listed, frames)
    lap("match_clips")
    split = build_split(f"kinetics{version}", 1, classes, entries, frames)
    lap("build_split")
    carve_validation("kinetics400", split.train, 0.05)
    lap("carve_validation")
    split_files(split)
    lap("render_files")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=240_000)
    parser.add_argument("--val", type=int, default=20_000)
    parser.add_argument("--extracted", type=int, default=240_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        csv_dir, workdir = synthesize(Path(tmp), args.train, args.val, args.extracted)
        made = time.perf_counter() - started
        base = ["build-splits", "-w", str(workdir), "--kinetics", str(csv_dir)]
        result = {
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "date": time.strftime("%Y-%m-%d"), "listed_train": args.train, "listed_val": args.val,
            "extracted": args.extracted, "synthesize_s": round(made, 1),
            "build_splits": run_command(base),
            "build_splits_val_ratio": run_command([*base, "--val-ratio", "0.05"]),
            "phases_s": phases(csv_dir, workdir),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
