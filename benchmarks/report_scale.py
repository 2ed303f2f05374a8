"""Time `tsnpipe report -w W --html` on a synthetic work folder of N videos (default 240,000) and weigh the page.

    python benchmarks/report_scale.py [--videos 240000] [--classes 400] [--work /tmp/tsnpipe-report-scale]

What is synthesized (nothing is decoded N times):
- a template: `extract-frames` and `extract-flow` (TV-L1, 5x1 iterations) really run on two bundled clips and
  the corrupt test clip, so rows, frames and flow are what the stages write;
- N rows per stage (frames, flow, pack-lmdb) copied from the template's through tsnpipe's own `Manifest`, with
  durations, frame rates and sizes drawn from Kinetics-like spreads and 0.5% failed rows with real reasons;
- frames/ and flow/ folders (hard links to the template's images) only for the videos the page samples: the
  report reads no other video's folder;
- a Kinetics-like split (`splits/kinetics400/split1/{train,val}.csv`, N videos over --classes classes), two
  training runs of 100 epochs each with their test score files (20,000 videos) and the fused scores.
Prints one JSON object: wall and CPU seconds (user + sys) of the report command (a fresh process, as a user
runs it), MB, load; on a loaded shared machine the CPU seconds are the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples" / "videos"
CORRUPT = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos" / "corrupted.mp4"
CLIPS = ("wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi", "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi")
TEST_VIDEOS = 20_000


def tsnpipe(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("tsnpipe")), *args]


def template(root: Path) -> Path:
    workdir = root / "template-w"
    if (workdir / "manifests" / "flow.parquet").exists():
        return workdir
    videos = root / "template-videos"
    for rel in CLIPS:
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / rel, videos / rel)
    (videos / "broken").mkdir(exist_ok=True)
    shutil.copy2(CORRUPT, videos / "broken" / "corrupted.mp4")
    subprocess.run(tsnpipe("extract-frames", str(videos), "-w", str(workdir), "--fps", "5", "--size", "64", "-j", "1",
                           "--no-progress"), capture_output=True)  # exits 1: the corrupt clip fails
    subprocess.run(tsnpipe("extract-flow", "-w", str(workdir), "--iterations", "5x1", "-j", "1", "--no-progress"),
                   check=True, capture_output=True)
    subprocess.run(tsnpipe("pack", "-w", str(workdir), "--format", "lmdb", "--no-progress"), check=True,
                   capture_output=True)
    return workdir


def synthesize(root: Path, n: int, classes: int, template_w: Path) -> Path:
    from tsnpipe.manifests.table import Manifest, manifest_path
    from tsnpipe.stages.report.sections import sample_ids

    workdir = root / f"w-{n}"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "manifests").mkdir(parents=True)
    rng = np.random.default_rng(0)
    stages = ("frames", "flow", "pack-lmdb")
    rows = {s: sorted(Manifest(template_w, s).rows.values(), key=lambda r: r["video_id"]) for s in stages}
    good = {s: [r for r in rows[s] if r["status"] == "done"] for s in stages}
    failed_row = next(r for r in rows["frames"] if r["status"] != "done")
    for stage in stages:
        shutil.copy2(manifest_path(template_w, stage).with_suffix(".run.json"),
                     manifest_path(workdir, stage).with_suffix(".run.json"))
    ids = [f"class_{i % classes:03d}/{i:011d}_000000_000010" for i in range(n)]
    fails = set(rng.choice(n, size=n // 200, replace=False).tolist())
    durations = np.clip(rng.normal(9.6, 1.2, n), 0.5, 10.0).round(2)
    fps = rng.choice([25.0, 29.97, 30.0, 24.0, 60.0], n, p=[0.3, 0.35, 0.2, 0.1, 0.05])
    sizes = rng.choice(4, n, p=[0.55, 0.3, 0.1, 0.05])
    size_table = [(340, 256), (640, 360), (1280, 720), (480, 360)]
    tables = {stage: Manifest(workdir, stage) for stage in stages}
    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    for i, vid in enumerate(ids):
        k = i % len(good["frames"])
        if i in fails:
            row = dict(failed_row, video_id=vid, source=f"/data/kinetics/{vid}.mp4", started_at=start)
            tables["frames"].rows[vid] = row
            continue
        width, height = size_table[sizes[i]]
        for stage in stages:
            row = dict(good[stage][k], video_id=vid, started_at=start)
            if stage == "frames":
                row.update(source=f"/data/kinetics/{vid}.mp4", output=f"frames/{vid}", duration=float(durations[i]),
                           src_fps=float(fps[i]), src_width=width, src_height=height)
            elif stage == "flow":
                row.update(source=f"frames/{vid}", output=f"flow/{vid}")
            else:
                row.update(source=f"frames/{vid}")
            tables[stage].rows[vid] = row
    for table in tables.values():
        table.compact()
    frames = pd.DataFrame({"video_id": ids, "status": ["failed" if i in fails else "done" for i in range(n)]})
    for vid in sample_ids(frames):  # the only folders the page opens
        k = ids.index(vid) % len(good["frames"])
        for stage in ("frames", "flow"):
            (workdir / stage / vid).mkdir(parents=True)
            for image in (template_w / stage / good["frames"][k]["video_id"]).iterdir():
                os.link(image, workdir / stage / vid / image.name)
    split = workdir / "splits" / "kinetics400" / "split1"
    split.mkdir(parents=True)
    names = [f"class_{c:03d}" for c in range(classes)]
    labels = np.array([i % classes for i in range(n)])
    table = pd.DataFrame({"video_id": ids, "label": labels, "class_name": [names[c] for c in labels]})
    table.iloc[: n - TEST_VIDEOS].to_csv(split / "train.csv", index=False)
    table.iloc[n - TEST_VIDEOS:].to_csv(split / "val.csv", index=False)
    runs(workdir, rng, table.iloc[n - TEST_VIDEOS:], names)
    return workdir


def runs(workdir: Path, rng, test: pd.DataFrame, names: list[str]) -> None:
    from tsnpipe.stages.scores.files import write_scores
    from tsnpipe.stages.scores.fuse import fuse_files
    from tsnpipe.stages.train.logs import write_metrics

    labels = test["label"].to_numpy()
    paths = []
    for modality, skill in (("rgb", 2.5), ("flow", 2.0)):
        name = f"{modality}-0123abcd"
        (workdir / "runs" / name).mkdir(parents=True)
        write_metrics(workdir / "runs" / name / "metrics.csv", [
            {"epoch": e, "lr": 0.001, "train_loss": 5 / e ** 0.5, "train_top1": min(0.95, 0.01 * e),
             "val_mean_class": min(0.7, 0.008 * e), "seconds": 2800.0} for e in range(1, 101)])
        scores = rng.normal(size=(len(labels), len(names))).astype(np.float32)
        scores[np.arange(len(labels)), labels] += skill
        paths.append(workdir / "scores" / f"{name}.pkl")
        write_scores(paths[-1], list(test["video_id"]), labels, names, scores, {"modality": modality}, {"split": 1})
    fuse_files(paths, weights=(1.0, 1.5), output=workdir / "scores" / "fused.pkl")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=240_000)
    parser.add_argument("--classes", type=int, default=400)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsnpipe-report-scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    workdir = synthesize(args.work, args.videos, args.classes, template(args.work))
    synthesized = time.perf_counter() - started
    load_before = os.getloadavg()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    out = workdir / "report.html"
    done = subprocess.run(tsnpipe("report", "-w", str(workdir), "--html", str(out)), capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    if done.returncode:
        sys.exit(done.stderr)
    print(json.dumps({"videos": args.videos, "classes": args.classes, "report_wall_s": round(wall, 2),
                      "report_cpu_s": round(cpu, 2),
                      "report_mb": round(out.stat().st_size / 1e6, 3), "synthesis_s": round(synthesized, 1),
                      "load_average_before": load_before, "load_average_after": os.getloadavg(),
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores", "output": done.stdout.strip()}))


if __name__ == "__main__":
    main()
