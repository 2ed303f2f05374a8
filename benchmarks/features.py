"""Snippets per second of `tsnpipe extract-features`: the model alone, and the whole stage, on the same device.

The pictures are the bundled clips' frames (extract-frames at short side 256, 10 fps), copied `--copies` times
so a GPU has enough snippets; the network is a torchvision backbone with a fixed random state dict (weights do
not change the speed), RGB, centre crop 224, `--layer pool`, as `--backbone resnet50 --pretrained PATH` runs it.
- model alone: the stage's forward (`extract.stream_features`'s input shape, channels_last, bf16 autocast
  on CUDA) on device-resident float input, repeated for `--seconds`;
- stage: `tsnpipe extract-features` in this process, from the JPEG folders (loader workers decode, the device
  cuts views and runs the model), timed by its own summary; snippets counted from its manifest rows.
Prints one JSON object. Usage:
  python benchmarks/features.py --prepare DIR            # here (needs ffmpeg): frames of the bundled clips
  python benchmarks/features.py --workdir DIR [--device cuda] [--copies 60] [--batch 512] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def model_alone(backbone: str, weights: Path, device: str, batch: int, seconds: float) -> float:
    import torch

    from tsnpipe.stages.features.models import imagenet_stream, layer_output, load_model
    from tsnpipe.stages.train.loop import autocast, autocast_dtype

    torch_device = torch.device(device)
    stream = imagenet_stream(backbone, str(weights))
    model = load_model(stream, torch_device)
    inputs = torch.randn(batch, 3, 224, 224, device=torch_device).contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(torch_device, None)

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
                workers: int | None) -> tuple[float, int]:
    from click.testing import CliRunner

    from tsnpipe.cli import main
    from tsnpipe.manifests.table import Manifest

    name = f"bench{int(time.time())}"
    args = ["extract-features", "-w", str(workdir), "--name", name, "--backbone", backbone, "--pretrained", str(weights),
            "--device", device, "--batch", str(batch), "--interval", str(interval), "--no-progress"]
    if workers is not None:
        args += ["--workers", str(workers)]
    start = time.perf_counter()
    result = CliRunner().invoke(main, args)
    wall = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    snippets = sum(int(row["snippets"]) for row in Manifest(workdir, f"features-{name}").rows.values())
    stage_seconds = float(result.output.strip().splitlines()[-1].split(" in ")[1].split(" s")[0])
    return snippets / stage_seconds, snippets, wall


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
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the model-alone loop runs")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        print(json.dumps({"prepared": str(args.prepare)}))
        return
    import torch
    import torchvision

    batch = args.batch or (512 if args.device.startswith("cuda") else 32)
    weights = args.workdir.parent / f"{args.backbone}-random.pth"
    torch.manual_seed(0)
    torch.save(getattr(torchvision.models, args.backbone)().state_dict(), weights)
    workdir = with_copies(args.workdir, args.copies) if args.copies > 1 else args.workdir
    alone = model_alone(args.backbone, weights, args.device, batch, args.seconds)
    stage, snippets, wall = whole_stage(workdir, args.backbone, weights, args.device, batch, args.interval, args.workers)
    print(json.dumps({
        "backbone": args.backbone, "device": args.device, "batch": batch, "size": 224, "snippets": snippets,
        "model_alone_snippets_per_s": round(alone, 1), "stage_snippets_per_s": round(stage, 1),
        "stage_over_model": round(stage / alone, 3), "stage_wall_s": round(wall, 1),
        "torch": torch.__version__, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
    }, indent=1))


if __name__ == "__main__":
    main()
