"""The refilled TV-L1's host cost per pair, counted on any machine, printed as one JSON object.

What bounds the GPU solver is the host: each time it waits for the device (a sync) and each kernel it
launches. Both are counted here on the code path a GPU runs (the host looks at the stopping flags only every
`check_every` steps, pairs frozen meanwhile; the median filter unfolded as on a GPU), with the eager step on
whatever device this machine has:
- launches_per_pair: operations that compute (views and metadata left out), counted with a TorchDispatchMode,
  with each round of primal-dual steps counted as one launch, as on a GPU where a round replays one CUDA graph;
  `step_ops_per_pair` adds what the steps cost when every operation of them is launched from Python.
- syncs_per_pair: each time the host waits for a device value: Tensor.tolist, .item, bool(), .nonzero, and index
  lists made with torch.tensor(..., device=...) (a blocking copy on CUDA).
- host_cpu_ms_per_pair: the solver thread's CPU time per pair; on the CPU it includes the arithmetic, so it is
  taken at a small frame size where the arithmetic is a small share.
--baseline DIR (an older tsnpipe laid out as the installed package: DIR/tsnpipe = pipeline/, with stages/ and
manifests/ inside it) or --baseline-rev REV (that layout made from a git revision of this repository) counts the
same in a subprocess with that code first on the path, so one run gives before, after and their ratios.
Usage: python benchmarks/flow_counts.py --baseline-rev 6e675c9 [--pairs 24 --size 64x48 --batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(pairs_wanted: int, size: tuple[int, int], batch: int, iterations: str) -> dict:
    """Counts for `pairs_wanted` real pairs through a RefillSolver on this process's tsnpipe."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import tsnpipe.stages.flow.refill as refill
    from tsnpipe.stages.flow import FlowParams
    from tsnpipe.stages.flow.torch_tvl1 import median_unfolded, tvl1_iteration

    sys.path.insert(0, str(REPO / "benchmarks"))
    from flow import clip_pairs

    inner, _, outer = iterations.partition("x")
    params = FlowParams(backend="torch", inner_iterations=int(inner), outer_iterations=int(outer))
    refill.check_interval = lambda params, device: params.check_every  # the GPU's looks
    refill.median_filter = lambda flow, size: median_unfolded(flow, size) if size > 1 else flow
    counts = {"ops": 0, "step_ops": 0, "steps": 0, "syncs": 0}
    in_step = [False]

    class Launches(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.__name__ not in ("detach.default", "alias.default"):
                counts["step_ops" if in_step[0] else "ops"] += 1
            return func(*args, **(kwargs or {}))

    def step(*args, **kwargs):
        in_step[0] = True
        try:
            counts["steps"] += 1
            return tvl1_iteration(*args, **kwargs)
        finally:
            in_step[0] = False

    def counted(original, test=lambda *a, **k: True):
        def wrapper(*args, **kwargs):
            if test(*args, **kwargs):
                counts["syncs"] += 1
            return original(*args, **kwargs)
        return wrapper

    patched = {name: getattr(torch.Tensor, name) for name in ("tolist", "item", "__bool__", "nonzero")}
    for name, original in patched.items():
        setattr(torch.Tensor, name, counted(original))
    make_tensor = torch.tensor
    torch.tensor = counted(make_tensor, lambda *a, **k: k.get("device") is not None)
    pairs = [(k, first, second) for k, (first, second) in enumerate(clip_pairs(pairs_wanted, size))]
    solver = refill.RefillSolver(params, torch.device("cpu"), batch, step)
    try:
        with torch.inference_mode(), Launches():
            start = time.thread_time()
            done = sum(len(finished) for finished in solver.solve(iter(pairs)))
            cpu = time.thread_time() - start
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)
        torch.tensor = make_tensor
    rounds = solver.stats.rounds
    return {"code": str(Path(refill.__file__).parents[2]), "pairs": done, "frame_size": f"{size[0]}x{size[1]}", "batch": batch, "iterations": iterations,
            "check_every": params.check_every, "rounds": rounds, "steps": solver.stats.steps,
            "launches_per_pair": round((counts["ops"] + rounds) / done, 2),
            "step_ops_per_pair": round(counts["step_ops"] / done, 2),
            "syncs_per_pair": round(counts["syncs"] / done, 2),
            "host_cpu_ms_per_pair": round(1000 * cpu / done, 2)}


def layout_from_rev(rev: str, target: Path) -> Path:
    """`rev` of this repository laid out as the installed package under `target`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "pipeline", "stages", "manifests"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    package = target / "tsnpipe"
    (target / "pipeline").rename(package)
    (target / "stages").rename(package / "stages")
    (target / "manifests").rename(package / "manifests")
    return target


def run(code: Path | None, args) -> dict:
    """The counts in a fresh process, with `code` (a package layout) first on the path when given."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [sys.executable, __file__, "--measure", "--pairs", str(args.pairs), "--size", args.size,
               "--batch", str(args.batch), "--iterations", args.iterations]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--size", default="64x48", help="frame size WxH")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", default="30x10", help="TV-L1 iterations INNER x OUTER")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--baseline-rev", default=None)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.measure:
        print(json.dumps(measure(args.pairs, size, args.batch, args.iterations)))
        return
    result = {"machine": os.uname().machine, "load_average": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = args.baseline or (layout_from_rev(args.baseline_rev, Path(tmp)) if args.baseline_rev else None)
        if baseline is not None:
            result["before"] = {"revision": args.baseline_rev, **run(baseline, args)}
        result["after"] = run(None, args)
    if "before" in result:
        result["after_over_before"] = {key: round(result["after"][key] / result["before"][key], 3)
                                       for key in ("launches_per_pair", "syncs_per_pair", "host_cpu_ms_per_pair")
                                       if result["before"][key]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
