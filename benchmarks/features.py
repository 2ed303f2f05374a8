"""Snippets per second of `tsnpipe extract-features`: per CPU core (before and after a revision, in one run), and
on a GPU the model alone against the whole stage.

The pictures are the bundled clips' frames (extract-frames at short side 256, 10 fps), copied `--copies` times
so a GPU has enough snippets; the network is a torchvision backbone with a fixed random state dict (weights do
not change the speed), RGB, centre crop 224, `--layer pool`, as `--backbone resnet50 --pretrained PATH` runs it.

--per-core (any machine): snippets per CPU-second (user + system time of this process and its loader workers,
so a loaded machine changes the figures less than wall time would) of
- loader: the stage's batches of decoded pictures (`inputs.SnippetBatches`), read in this process;
- prepare: those pictures made into model input on the CPU (`extract.prepare_batch`: views cut, normalised);
- stage: `tsnpipe extract-features` end to end on the CPU, default precision (fp32 there);
with --baseline-rev REV (or --baseline DIR, a package layout as benchmarks/flow_counts.py makes) the same
counted with that code first on the path, in a subprocess, so one run gives before, after and their ratios.
A GPU's goal, 2,000 snippets/s, needs the loader's figure times the workers to pass 2,000.

--device cuda: the model alone (the stage's forward at `--precision`, channels_last, on device-resident input,
repeated for `--seconds`) and the whole stage from the JPEG folders, snippets counted from its manifest rows.
Prints one JSON object. Usage:
  python benchmarks/features.py --prepare DIR            # here (needs ffmpeg): frames of the bundled clips
  python benchmarks/features.py --workdir DIR --per-core --baseline-rev ad52021 [--backbone resnet18]
  python benchmarks/features.py --workdir DIR --device cuda [--copies 60] [--batch 512] [--interval 0.2]
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
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "samples" / "videos"


def prepare(workdir: Path) -> None:
    from click.testing import CliRunner

    from tsnpipe.cli import main

    result = CliRunner().invoke(main, ["extract-frames", str(SAMPLES), "-w", str(workdir), "--size", "256", "-j", "2",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output


def with_copies(workdir: Path, copies: int) -> Path:
    """A workdir whose frames are `copies` symlinked copies of every prepared video, with their manifest rows."""
    from tsnpipe.manifests.table import Manifest

    target = workdir.parent / f"{workdir.name}-x{copies}"
    if target.exists():
        shutil.rmtree(target)
    (target / "manifests").mkdir(parents=True)
    shutil.copy(workdir / "manifests" / "frames.run.json", target / "manifests" / "frames.run.json")
    rows, manifest = Manifest(workdir, "frames").rows, Manifest(target, "frames")
    for copy in range(copies):
        for video_id, row in rows.items():
            new_id = f"{video_id}_copy{copy}"
            link = target / "frames" / new_id
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((workdir / "frames" / video_id).resolve(), target_is_directory=True)
            manifest.rows[new_id] = {**row, "video_id": new_id, "output": f"frames/{new_id}"}
    manifest.compact()
    return target


def model_alone(backbone: str, weights: Path, device: str, batch: int, seconds: float, precision: str | None) -> float:
    """The stage's forward alone: snippets per second on device-resident input, at the stage's precision rule."""
    import torch

    from tsnpipe.stages.features.models import imagenet_stream, layer_output, load_model
    from tsnpipe.stages.scores.evaluate import precision_dtype
    from tsnpipe.stages.train.loop import autocast

    torch_device = torch.device(device)
    stream = imagenet_stream(backbone, str(weights))
    model = load_model(stream, torch_device)
    inputs = torch.randn(batch, 3, 224, 224, device=torch_device).contiguous(memory_format=torch.channels_last)
    dtype = precision_dtype(torch_device, precision)

    @torch.no_grad()
    def step():
        with autocast(torch_device, dtype):
            return layer_output(model, inputs, "pool")

    step()
    if torch_device.type == "cuda":
        torch.cuda.synchronize()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = step()
        done += batch
    out.cpu()
    return done / (time.perf_counter() - start)


def whole_stage(workdir: Path, backbone: str, weights: Path, device: str, batch: int, interval: float,
                workers: int | None, extra: tuple[str, ...] = ()) -> tuple[float, int, float]:
    """(snippets per second by the stage's own summary, snippets, wall seconds) of one extract-features run."""
    from click.testing import CliRunner

    from tsnpipe.cli import main
    from tsnpipe.manifests.table import Manifest

    name = f"bench{int(time.time())}"
    args = ["extract-features", "-w", str(workdir), "--name", name, "--backbone", backbone, "--pretrained", str(weights),
            "--device", device, "--batch", str(batch), "--interval", str(interval), "--no-progress", *extra]
    if workers is not None:
        args += ["--workers", str(workers)]
    start = time.perf_counter()
    result = CliRunner().invoke(main, args)
    wall = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    snippets = sum(int(row["snippets"]) for row in Manifest(workdir, f"features-{name}").rows.values())
    stage_seconds = float(result.output.strip().splitlines()[-1].split(" in ")[1].split(" s")[0])
    return snippets / stage_seconds, snippets, wall


def cpu_seconds() -> float:
    """User + system seconds of this process and of its finished children (the stage's loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def per_core(workdir: Path, backbone: str, weights: Path, batch: int, interval: float, seconds: float) -> dict:
    """Snippets per CPU-second of the loader, of preparing model input, and of the whole stage on the CPU, with the
    tsnpipe first on this process's path."""
    import torch

    import tsnpipe
    from tsnpipe.cmd_features import feature_items
    from tsnpipe.stages.features.extract import Spacing, plan_video, prepare_batch
    from tsnpipe.stages.features.inputs import SnippetBatches
    from tsnpipe.stages.features.models import imagenet_stream

    before = cpu_seconds()
    stage, snippets, wall = whole_stage(workdir, backbone, weights, "cpu", batch, interval, None)
    stage_cpu = cpu_seconds() - before
    torch.set_num_threads(1)  # the loader's and prepare's figures are one core's
    _, facts = feature_items(workdir, False)
    plans = [plan_video(video_id, facts[video_id], Spacing(interval=interval)) for video_id in sorted(facts)]
    stream = imagenet_stream(backbone, str(weights))
    dataset = SnippetBatches(workdir, plans, [stream.params], batch)
    per_round = sum(len(plan.centres) for plan in plans)
    read, rounds, start = [], 0, time.process_time()
    while not rounds or time.process_time() - start < seconds:
        read = [dataset[index] for index in range(len(dataset))]
        rounds += 1
    loader = rounds * per_round / (time.process_time() - start)
    cpu = torch.device("cpu")
    prepared, start = 0, time.process_time()
    while not prepared or time.process_time() - start < seconds:
        for items in read:
            prepare_batch(items, cpu, [stream], 1, batch)
        prepared += per_round
    prepare = prepared / (time.process_time() - start)
    return {"code": str(Path(tsnpipe.__file__).parent), "snippets": snippets,
            "loader_snippets_per_cpu_s": round(loader, 1), "prepare_snippets_per_cpu_s": round(prepare, 1),
            "stage_snippets_per_cpu_s": round(snippets / stage_cpu, 2), "stage_snippets_per_s": round(stage, 2),
            "stage_cpu_s": round(stage_cpu, 1), "stage_wall_s": round(wall, 1)}


def per_core_in(code: Path | None, args, batch: int) -> dict:
    """`per_core` in a fresh process, with `code` (a package layout) first on the path when given."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    command = [sys.executable, __file__, "--measure", "--workdir", str(args.workdir), "--backbone", args.backbone,
               "--batch", str(batch), "--interval", str(args.interval), "--seconds", str(args.seconds)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout)


def random_weights(workdir: Path, backbone: str) -> Path:
    import torch
    import torchvision

    weights = workdir.parent / f"{backbone}-random.pth"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, backbone)().state_dict(), weights)
    return weights


def per_core_report(args, batch: int) -> dict:
    result = {"backbone": args.backbone, "batch": batch, "size": 224, "interval_s": args.interval,
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "load_average_before": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        from flow_counts import layout_from_rev  # benchmarks/ is this script's folder, first on sys.path

        baseline = args.baseline or (layout_from_rev(args.baseline_rev, Path(tmp)) if args.baseline_rev else None)
        if baseline is not None:
            result["before"] = {"revision": args.baseline_rev, **per_core_in(baseline, args, batch)}
        result["after"] = per_core_in(None, args, batch)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if "before" in result:
        keys = ("loader_snippets_per_cpu_s", "prepare_snippets_per_cpu_s", "stage_snippets_per_cpu_s")
        result["after_over_before"] = {key: round(result["after"][key] / result["before"][key], 3) for key in keys}
    result["loader_workers_for_2000_per_s"] = round(2000 / result["after"]["loader_snippets_per_cpu_s"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="write the frames of the bundled clips into this workdir and stop")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None, help="snippets a forward pass (default 32 CPU, 512 GPU)")
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.64, help="seconds between snippets")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the model-alone loop runs (per-core: "
                        "each of the loader and prepare loops)")
    parser.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default=None,
                        help="GPU: the stage's and the model's precision (default: the stage's, fp16 on a GPU)")
    parser.add_argument("--per-core", action="store_true", help="snippets per CPU-second, before and after")
    parser.add_argument("--baseline", type=Path, default=None, help="per-core: an older tsnpipe as a package layout")
    parser.add_argument("--baseline-rev", default=None, help="per-core: that layout made from a git revision")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        print(json.dumps({"prepared": str(args.prepare)}))
        return
    import torch

    batch = args.batch or (512 if args.device.startswith("cuda") else 32)
    if args.measure:
        weights = random_weights(args.workdir, args.backbone)
        print(json.dumps(per_core(args.workdir, args.backbone, weights, batch, args.interval, args.seconds)))
        return
    if args.per_core:
        print(json.dumps(per_core_report(args, batch), indent=1))
        return
    weights = random_weights(args.workdir, args.backbone)
    workdir = with_copies(args.workdir, args.copies) if args.copies > 1 else args.workdir
    alone = model_alone(args.backbone, weights, args.device, batch, args.seconds, args.precision)
    extra = ("--precision", args.precision) if args.precision else ()
    stage, snippets, wall = whole_stage(workdir, args.backbone, weights, args.device, batch, args.interval,
                                        args.workers, extra)
    print(json.dumps({
        "backbone": args.backbone, "device": args.device, "batch": batch, "size": 224, "snippets": snippets,
        "precision": args.precision or "stage default",
        "model_alone_snippets_per_s": round(alone, 1), "stage_snippets_per_s": round(stage, 1),
        "stage_over_model": round(stage / alone, 3), "stage_wall_s": round(wall, 1),
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }, indent=1))


if __name__ == "__main__":
    main()
