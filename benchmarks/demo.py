"""Time `tsnpipe demo` from scratch: wall and CPU seconds (user + sys of all its processes), per step and in
all, and the verdict's accuracies, as one JSON object per seed.

    python benchmarks/demo.py --seeds 0 1 2

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

STEP = re.compile(r"^demo: (.+) next; ")
VERDICT = re.compile(r"flow stream gets (\d+)% and the RGB stream (\d+)%|flow (\d+)% and RGB (\d+)%")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_demo(seed: int, workdir: Path, threads: int | None) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [str(Path(sys.executable).with_name("tsnpipe")), "demo", "-w", str(workdir), "--seed", str(seed),
               "--no-progress"]
    steps, current, mark = {}, None, time.perf_counter()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if match := STEP.match(line):
                now = time.perf_counter()
                if current:
                    steps[current] = round(now - mark, 1)
                current, mark = match[1], now
    if current:
        steps[current] = round(time.perf_counter() - mark, 1)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_before
    found = next((m for line in lines if (m := VERDICT.search(line))), None)
    flow, rgb = (int(found[1] or found[3]), int(found[2] or found[4])) if found else (None, None)
    return {"seed": seed, "exit_code": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "step_wall_s": steps, "flow_pct": flow, "rgb_pct": rgb, "threads": threads,
            "load_average": os.getloadavg(), "verdict": next((l for l in lines if "flow beats RGB" in l), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for torch (0: torch's default)")
    parser.add_argument("--keep", action="store_true", help="keep the demo workdirs")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tsnpipe-demo-bench-"))
    try:
        for seed in args.seeds:
            print(json.dumps(run_demo(seed, root / f"seed{seed}", args.threads or None)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
