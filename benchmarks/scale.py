"""How the per-run costs grow with the number of videos: N synthetic videos in a Kinetics-like layout.

    python benchmarks/scale.py --sizes 1000,30000,240000 [--pack-sizes 1000,8000] [--ffmpeg 200]
        [--baseline DIR] [--work /tmp/tsnpipe-scale] > scale.json

What is synthesized, for each N (nothing here is decoded N times):
- `videos/<class>/<youtube_id>_<start:06d>_<end:06d>.avi`: 20 class folders of hard links to the first 2 s of
  the bundled sample clips, 160 px wide (so every video is a real, decodable file, and `touch` moves N mtimes);
- a template workdir made by really running `extract-frames`, `extract-flow` and `pack` (both formats) on
  the bundled clips, whose rows are then copied, one per synthetic video, through tsnpipe's own `Manifest`
  (so the tables are exactly what the stages write), with the stage's `.run.json` beside them;
- `frames/<vid>/` and `flow/<vid>/` folders: for the first max(--pack-sizes) videos hard links to the
  template's real images (so `pack` reads real JPEGs); past that empty folders (a no-op run only asks
  whether the folder is there).

What is timed (wall seconds, peak RSS of the tsnpipe process from /usr/bin/time, MB written from wait4):
no-op `extract-frames`, no-op `extract-flow`, `status`, `extract-frames` after `touch` of every video (every video hashed, none
redone), `build-splits --folders` (this layout has class folders), no-op `pack` of both formats, and, for
--pack-sizes, `pack --format hdf5` of that many videos into a fresh store with 1 MB shards (so the index is
committed hundreds of times: its cost shows as growth faster than N) plus the bytes of index written.
--ffmpeg K: `extract-frames` of K real videos against plain ffmpeg (one process a video, the same filter
chain, as many at once as `-j`) on the same videos.

--baseline DIR runs every timed command a second time with DIR first on PYTHONPATH (a copy of an older
tsnpipe laid out as the installed package: DIR/tsnpipe = pipeline/, DIR/tsnpipe/stages, .../manifests),
so before/after ratios come from the same machine state. `--baseline git:COMMIT` lays that copy out from
the commit of this repository (`git archive`) under --work.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "pipeline" / "samples" / "videos"
CLASSES = 20
PACKED: set[int] = set()  # the pack sizes measured so far
FRAMES_ARGS = ("--fps", "2", "--size", "128", "-j", "2", "--no-progress")  # 4 frames, ~28 KB a video
FLOW_ARGS = ("--backend", "opencv", "-j", "2", "--no-progress")


def baseline_tree(spec: str, work: Path) -> Path:
    """The folder to put first on PYTHONPATH for `--baseline`: DIR as given, or `git:COMMIT` laid out as the
    installed package from this repository's history."""
    if not spec.startswith("git:"):
        return Path(spec)
    import tarfile
    import tempfile

    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", spec[4:]], check=True,
                            capture_output=True, text=True).stdout.strip()
    root = work / f"baseline-{commit}"
    if (root / "tsnpipe" / "cli.py").is_file():
        return root
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        archive = Path(tmp) / "tree.tar"
        subprocess.run(["git", "-C", str(repo), "archive", "-o", str(archive), commit, "pipeline", "stages",
                        "manifests"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        os.replace(Path(tmp) / "pipeline", root / "tsnpipe")
        for sub in ("stages", "manifests"):
            os.replace(Path(tmp) / sub, root / "tsnpipe" / sub)
    return root


def tsnpipe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from tsnpipe.cli import main; sys.exit(main())", *args]


def timed(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Wall seconds, peak RSS (MB), MB written and exit code of one command; its output's last line.

    The command runs under /usr/bin/time, whose own peak is small: a child forked straight from this
    process would inherit this process's (large) peak RSS as its own floor."""
    marker = "TSNPIPE_SCALE_PEAK_KB="
    wrapped = ["/usr/bin/time", "-f", f"{marker}%M", *cmd] if os.path.exists("/usr/bin/time") else cmd
    started = time.perf_counter()
    proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    peaks = [int(line.split("=")[1]) for line in out.splitlines() if line.startswith(marker)]
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith(marker)]
    return {"s": round(seconds, 2), "rss_mb": round((peaks[-1] if peaks else usage.ru_maxrss) / 1024, 1),
            "written_mb": round(usage.ru_oublock * 512 / 1e6, 1), "rc": proc.returncode,
            "last": lines[-1][:300] if lines else ""}


def kinetics_name(n: int) -> str:
    """A YouTube-like id and a 10 s window, as the CVDF mirror names its clips."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    digits, x = [], n * 2654435761 % (1 << 66)
    for _ in range(11):
        digits.append(alphabet[x % 64])
        x //= 64
    start = (n * 7) % 290
    return f"{''.join(digits)}_{start:06d}_{start + 10:06d}"


def template(root: Path) -> tuple[Path, Path]:
    """Real outputs of the bundled clips: a video folder and a workdir with frames, flow and both stores."""
    videos, workdir = root / "template-fps2-videos", root / "template-fps2-w"
    if (workdir / "stores" / "frames.hdf5").is_dir():
        return videos, workdir
    shutil.rmtree(videos, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    import imageio_ffmpeg

    for clip in sorted(SAMPLES.rglob("*.avi")):  # the first 2 s at 160 px wide: tiny, real, decodable clips
        (videos / clip.parent.name).mkdir(parents=True, exist_ok=True)
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(clip),
                        "-t", "2", "-vf", "scale=160:-2", "-c:v", "mpeg4", "-q:v", "5", "-an",
                        str(videos / clip.parent.name / clip.name)], check=True)
    for args in (("extract-frames", str(videos), "-w", str(workdir), *FRAMES_ARGS),
                 ("extract-flow", "-w", str(workdir), *FLOW_ARGS),
                 ("pack", "-w", str(workdir), "--format", "lmdb", "--no-progress"),
                 ("pack", "-w", str(workdir), "--format", "hdf5", "--no-progress")):
        subprocess.run(tsnpipe_cmd(*args), check=True, capture_output=True)
    return videos, workdir


def synthesize(root: Path, n: int, full: int, videos_t: Path, workdir_t: Path) -> tuple[Path, Path, list[str]]:
    """N videos (hard links to the templates' clips), their frames/flow folders and four manifests."""
    from tsnpipe.manifests.table import Manifest, manifest_path

    videos, workdir = root / f"videos-{n}", root / f"w-{n}"
    shutil.rmtree(videos, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    rows = {stage: sorted(Manifest(workdir_t, stage).rows.values(), key=lambda r: r["video_id"])
            for stage in ("frames", "flow", "pack-lmdb", "pack-hdf5")}
    clips = [Path(r["source"]) for r in rows["frames"]]
    for row, clip in zip(rows["frames"], clips):  # hard links share the mtime that `touch` moved: put it back
        mtime = json.loads(row["fingerprint"])["mtime_ns"]
        os.utime(clip, ns=(mtime, mtime))
    images = {stage: {r["video_id"]: sorted((workdir_t / stage / r["video_id"]).iterdir())
                      for r in rows["frames"]} for stage in ("frames", "flow")}
    tables = {stage: Manifest(workdir, stage) for stage in rows}
    for stage in rows:
        shutil.copy2(manifest_path(workdir_t, stage).with_suffix(".run.json"),
                     (workdir / "manifests").mkdir(parents=True, exist_ok=True) or
                     manifest_path(workdir, stage).with_suffix(".run.json"))
    frames_run = json.loads(manifest_path(workdir, "frames").with_suffix(".run.json").read_text())
    frames_run["inputs"]["video_dir"] = str(videos.resolve())
    manifest_path(workdir, "frames").with_suffix(".run.json").write_text(json.dumps(frames_run))
    for stage in ("pack-lmdb", "pack-hdf5"):
        info_path = manifest_path(workdir, stage).with_suffix(".run.json")
        info = json.loads(info_path.read_text())
        info["inputs"]["store"] = str(workdir / "stores" / Path(info["inputs"]["store"]).name)
        info_path.write_text(json.dumps(info))
    shutil.copytree(workdir_t / "stores", workdir / "stores")
    with_images = []
    for i in range(n):
        k = i % len(clips)
        template_id = rows["frames"][k]["video_id"]
        vid = f"class_{i % CLASSES:02d}/{kinetics_name(i)}"
        path = videos / f"{vid}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(clips[k], path)
        except OSError as error:  # the file system's cap on links to one file (ext4: 65,000): link a fresh copy
            if error.errno != errno.EMLINK:
                raise
            fresh = clips[k].with_name(f"{clips[k].stem}.{i}{clips[k].suffix}")
            shutil.copy2(clips[k], fresh)
            clips[k] = fresh
            os.link(fresh, path)
        if i < full:
            with_images.append(vid)
        for stage in ("frames", "flow"):
            folder = workdir / stage / vid
            folder.mkdir(parents=True)
            if i < full:
                for image in images[stage][template_id]:
                    os.link(image, folder / image.name)
        for stage, stage_rows in rows.items():
            row = dict(stage_rows[k])
            row["video_id"] = vid
            if stage == "frames":
                row.update(source=str(path), output=f"frames/{vid}")
                row.pop("seen", None)
            elif stage == "flow":
                row.update(source=f"frames/{vid}", output=f"flow/{vid}")
            else:
                row.update(source=f"frames/{vid}")
            tables[stage].rows[vid] = row
    for table in tables.values():
        table.compact()
    return videos, workdir, with_images


def store_index_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.iterdir() if p.name.startswith("index"))


SKIP_BEFORE: list[str] = []  # --skip-before


def measure(root: Path, n: int, full: int, videos_t: Path, workdir_t: Path, envs: dict[str, dict | None],
            pack_sizes: list[int]) -> dict:
    """Every timed command on one synthetic workdir, for each tsnpipe in `envs` ({label: environment}) in turn."""
    from tsnpipe.manifests.table import Manifest

    started = time.perf_counter()
    videos, workdir, with_images = synthesize(root, n, full, videos_t, workdir_t)
    print(f"# n={n}: synthesized in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    w = str(workdir)
    result = {label: {} for label in envs}

    def each(name: str, cmd: list[str], before=None) -> None:
        for label, env in envs.items():
            if label == "before" and any(name.startswith(prefix) for prefix in SKIP_BEFORE):
                continue
            if before:
                before()
            result[label][name] = timed(cmd, env)

    def touch_every_video() -> None:
        now = time.time()
        for path in videos.rglob("*.avi"):
            os.utime(path, (now, now))

    frames = tsnpipe_cmd("extract-frames", str(videos), "-w", w, *FRAMES_ARGS)
    each("extract-frames no-op", frames)
    each("extract-flow no-op", tsnpipe_cmd("extract-flow", "-w", w, *FLOW_ARGS))
    each("status", tsnpipe_cmd("status", "-w", w))
    each("extract-frames after touch of every video", frames, before=touch_every_video)
    each("extract-frames no-op after touch", frames)
    each("build-splits --folders", tsnpipe_cmd("build-splits", "-w", w, "--folders"))
    for fmt in ("lmdb", "hdf5"):
        each(f"pack {fmt} no-op", tsnpipe_cmd("pack", "-w", w, "--format", fmt, "--no-progress"))
    pending = [size for size in pack_sizes if size <= len(with_images) and size not in PACKED]
    rows = {stage: Manifest(workdir, stage).rows for stage in ("frames", "flow")} if pending else {}
    for size in pack_sizes:  # each at the smallest N that holds it
        if size > len(with_images) or size in PACKED:
            continue
        PACKED.add(size)
        fresh = root / f"w-pack-{size}"

        def fresh_workdir() -> None:
            shutil.rmtree(fresh, ignore_errors=True)
            (fresh / "manifests").mkdir(parents=True)
            for stage in ("frames", "flow"):
                table = Manifest(fresh, stage)
                for vid in with_images[:size]:
                    table.rows[vid] = rows[stage][vid]
                    (fresh / stage / vid).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(workdir / stage / vid, fresh / stage / vid)
                table.compact()

        name = f"pack hdf5 of {size} videos (1 MB shards)"
        each(name, tsnpipe_cmd("pack", "-w", str(fresh), "--format", "hdf5", "--shard-mb", "1", "--no-progress"),
             before=fresh_workdir)
        shutil.rmtree(fresh, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(videos, ignore_errors=True)
    if len(envs) > 1:
        (first, a), (second, b) = result.items()
        result[f"{second} / {first} (wall time)"] = {k: round(b[k]["s"] / max(v["s"], 1e-3), 2) for k, v in a.items() if k in b}
    print(f"# n={n} done", file=sys.stderr, flush=True)
    return result


def plain_ffmpeg(root: Path, count: int, jobs: int, videos_t: Path) -> dict:
    """extract-frames of `count` tiny real videos at 10 fps, short side 256, against the same ffmpeg run
    directly with the same filters, `jobs` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from tsnpipe.stages.frames import ffmpeg_executable

    videos_t = sorted(videos_t.rglob("*.avi"))
    videos = root / "ffmpeg-videos"
    shutil.rmtree(videos, ignore_errors=True)
    for i in range(count):
        path = videos / f"class_{i % CLASSES:02d}" / f"{kinetics_name(i)}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(videos_t[i % len(videos_t)], path)
    ours = root / "ffmpeg-w"
    shutil.rmtree(ours, ignore_errors=True)
    run = timed(tsnpipe_cmd("extract-frames", str(videos), "-w", str(ours), "--fps", "10", "--size", "256",
                            "-j", str(jobs), "--no-progress"))
    exe = ffmpeg_executable()
    out = root / "ffmpeg-plain"
    shutil.rmtree(out, ignore_errors=True)

    def one(path: Path) -> int:
        folder = out / path.relative_to(videos).with_suffix("")
        folder.mkdir(parents=True)
        vf = "fps=fps=10:round=up,scale=256:256:force_original_aspect_ratio=increase,setsar=1"
        return subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-vf", vf,
                               "-q:v", "2", "-threads", "1", str(folder / "img_%05d.jpg")]).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, sorted(videos.rglob("*.avi"))))
    plain = round(time.perf_counter() - started, 2)
    frames = sum(1 for _ in out.rglob("*.jpg"))
    ours_frames = sum(1 for _ in (ours / "frames").rglob("*.jpg"))
    for folder in (videos, ours, out):
        shutil.rmtree(folder, ignore_errors=True)
    return {"videos": count, "jobs": jobs, "extract-frames": run, "plain ffmpeg s": plain,
            "plain ffmpeg failures": sum(1 for c in codes if c), "frames ours": ours_frames, "frames ffmpeg": frames,
            "ratio (ours / ffmpeg)": round(run["s"] / plain, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,30000,240000")
    parser.add_argument("--pack-sizes", default="1000,8000")
    parser.add_argument("--ffmpeg", type=int, default=0,
                        help="videos for extract-frames against plain ffmpeg (0: skip)")
    parser.add_argument("--baseline", default=None, help="DIR, or git:COMMIT of this repository")
    parser.add_argument("--skip-before", default="", help="commands (name prefixes, comma-separated, e.g. 'pack') "
                        "run for the current code only: the baseline's runs of them are not comparable (an older "
                        "version that cannot read the newer rows redoes every video)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsnpipe-scale"))
    args = parser.parse_args()
    SKIP_BEFORE.extend(name for name in args.skip_before.split(",") if name)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    pack_sizes = [int(s) for s in args.pack_sizes.split(",") if s]
    args.work.mkdir(parents=True, exist_ok=True)
    videos_t, workdir_t = template(args.work)
    full = max(pack_sizes, default=0)
    report = {"machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "layout": f"{CLASSES} class folders of Kinetics-named hard links to {len(list(videos_t.rglob('*.avi')))} "
                        "bundled clips; manifests copied from a real run of them", "sizes": {}}
    envs = {"now": None}
    if args.baseline:
        before = baseline_tree(args.baseline, args.work)
        report["baseline"] = args.baseline
        envs["before"] = {**os.environ, "PYTHONPATH": f"{before}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for n in sizes:
        report["sizes"][str(n)] = measure(args.work, n, full, videos_t, workdir_t, envs, pack_sizes)
    if args.ffmpeg:
        report["extract-frames vs plain ffmpeg"] = plain_ffmpeg(args.work, args.ffmpeg, os.cpu_count() or 1,
                                                                       videos_t)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
