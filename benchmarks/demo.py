"""Time `tsnpipe demo` from scratch: wall and CPU seconds (user + sys of all its processes), per step and in
all, the verdict's accuracies, how its ETAs compared with the time that was really left, and the size and
time of `tsnpipe report --html` on its workdir, as one JSON object per seed.

    python benchmarks/demo.py --seeds 0 1 2

The demo learns its steps' costs in `$XDG_CACHE_HOME/tsnpipe/`; the runs here share a fresh cache folder
(so the first run starts from the built-in costs and the next ones learn from those before them), or the
machine's own with --machine-cache. `eta` lists, per step, the time left the demo announced before it and the
time that was really left (to the demo's exit); `eta_error_from_step_2` is the largest |announced / actual - 1|
from the second step on.

On a shared machine the wall time depends on the other jobs; the CPU seconds do not (much). With the
training single-threaded (OMP_NUM_THREADS=1, the default here) the training and test steps' CPU seconds
bound their wall time on an idle core, and the frames and flow steps run on `--jobs` processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP = re.compile(r"^demo: (.+) next; .* about (?:(\d+) min )?(\d+) s left")
VERDICT = re.compile(r"flow stream gets (\d+)% and the RGB stream (\d+)%|flow (\d+)% and RGB (\d+)%")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(seed: int, workdir: Path, threads: int | None, cache: Path | None) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"XDG_CACHE_HOME": str(cache)} if cache else {})}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [str(Path(sys.executable).with_name("tsnpipe")), "demo", "-w", str(workdir), "--seed", str(seed),
               "--no-progress"]
    steps, current, mark, announced = {}, None, time.perf_counter(), []
    cpu_before, started, load_start = cpu_seconds(), time.perf_counter(), os.getloadavg()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if match := STEP.match(line):
                now = time.perf_counter()
                if current:
                    steps[current] = round(now - mark, 1)
                current, mark = match[1], now
                announced.append((match[1], now, 60 * int(match[2] or 0) + int(match[3])))
    if current:
        steps[current] = round(time.perf_counter() - mark, 1)
    ended = time.perf_counter()
    wall, cpu = ended - started, cpu_seconds() - cpu_before
    eta = [{"step": label, "announced_s": left, "actual_s": round(ended - at, 1)} for label, at, left in announced]
    errors = [abs(e["announced_s"] / max(e["actual_s"], 1e-3) - 1) for e in eta[1:]]
    found = next((m for line in lines if (m := VERDICT.search(line))), None)
    flow, rgb = (int(found[1] or found[3]), int(found[2] or found[4])) if found else (None, None)
    return {"seed": seed, "exit_code": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "step_wall_s": steps, "first_eta_s": eta[0]["announced_s"] if eta else None,
            "first_eta_actual_s": eta[0]["actual_s"] if eta else None,
            "eta_error_from_step_2": round(max(errors), 3) if errors else None, "eta": eta, "flow_pct": flow,
            "rgb_pct": rgb, "threads": threads, "load_average_start": load_start, "load_average": os.getloadavg(),
            "report": report_figures(workdir) if proc.returncode == 0 else None,
            "verdict": next((l for l in lines if "flow beats RGB" in l), None)}


def report_figures(workdir: Path) -> dict:
    """Wall and CPU seconds and MB of `tsnpipe report --html` on the demo's workdir (written again, from scratch)."""
    out = workdir / "report-bench.html"
    started, cpu_before = time.perf_counter(), cpu_seconds()
    subprocess.run([str(Path(sys.executable).with_name("tsnpipe")), "report", "-w", str(workdir), "--html", str(out)],
                   check=True, capture_output=True)
    return {"wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(cpu_seconds() - cpu_before, 2),
            "mb": round(out.stat().st_size / 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for torch (0: torch's default)")
    parser.add_argument("--keep", action="store_true", help="keep the demo workdirs")
    parser.add_argument("--machine-cache", action="store_true",
                        help="learn from (and into) this machine's step costs instead of a fresh cache")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tsnpipe-demo-bench-"))
    try:
        for seed in args.seeds:
            cache = None if args.machine_cache else root / "cache"
            print(json.dumps(run_demo(seed, root / f"seed{seed}", args.threads or None, cache)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
