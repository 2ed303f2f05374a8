"""The parts of `tsnpipe status` past the per-video stages: split folders, training runs and score files.

Read with the standard library only (csv, json, re), so `status` stays quick and never imports torch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tsnpipe.manifests.files import ManifestError
from tsnpipe.stages.splits.escapes import unescape


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _done(manifests, stage: str, count: str) -> dict[str, int]:
    """video id -> `count` of the stage's done rows, read column-wise."""
    table = manifests[stage].columns(["video_id", "status", count])
    return {vid: int(value or 0) for vid, status, value in
            zip(table["video_id"].to_pylist(), table["status"].to_pylist(), table[count].to_pylist()) if status == "done"}


def split_status(workdir: Path, folder: Path, frames: dict[str, int], pairs: dict[str, int]) -> dict:
    """Counts of a split folder, and how many of its videos `build-splits` would now list differently."""
    train, test = _csv_rows(folder / "train.csv"), _csv_rows(folder / "test.csv")
    changed = sum(1 for row in train + test
                  if frames.get(row["video_id"]) != int(row["frames"])
                  or pairs.get(row["video_id"], 0) != int(row["flow_pairs"]))
    text = (folder / "missing.txt").read_text(encoding="utf-8") if (folder / "missing.txt").is_file() else ""
    missing = [line.split("\t") for line in text.split("\n") if line.strip()]  # names escape \n; \x1c, \x85 stay
    upstream = ("not extracted", "frames failed")  # not the names left out of the lists for their whitespace
    found = sum(1 for parts in missing if len(parts) > 2 and parts[2] in upstream and unescape(parts[1]) in frames)
    return {"train": len(train), "test": len(test), "missing": len(missing), "changed": changed,
            "now extracted": found}


def run_status(run: Path) -> dict:
    """Epochs done and the best validation mean class accuracy of a training run folder."""
    rows = _csv_rows(run / "metrics.csv")
    best = max(rows, key=lambda row: float(row.get("val_mean_class") or "nan"), default=None)
    return {"epochs done": len(rows), "best epoch": int(best["epoch"]) if best else None,
            "best val mean class": float(best["val_mean_class"]) if best else None,
            "last checkpoint": (run / "last.pt").is_file()}


def score_status(report: Path) -> dict:
    """The accuracies a `tsnpipe test` wrote beside its score file."""
    try:
        content = json.loads(report.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {"unreadable": True}
    return {key: content[key] for key in ("videos", "top1", "top5", "mean_class") if key in content}


def outputs_report(workdir: Path, report: dict, manifests=None) -> dict:
    """{"splits": {...}, "runs": {...}, "scores": {...}} for what the workdir holds; `manifests` maps a stage to
    its Manifest, read once (read here when not given)."""
    splits = {}
    split_folders = sorted(p.parent for p in (workdir / "splits").glob("*/split*/train.csv"))
    if split_folders:
        try:
            if manifests is None:
                from tsnpipe.status import Manifests

                manifests = Manifests(workdir)
            frames, pairs = _done(manifests, "frames", "frames"), _done(manifests, "flow", "pairs")
        except ManifestError:
            frames = pairs = None  # named as damaged above
        for folder in split_folders:
            if frames is not None:
                splits[folder.relative_to(workdir).as_posix()] = split_status(workdir, folder, frames, pairs)
    runs = {run.parent.relative_to(workdir).as_posix(): run_status(run.parent)
            for run in sorted((workdir / "runs").glob("*/metrics.csv"))}
    scores = {report.with_suffix(".pkl").relative_to(workdir).as_posix(): score_status(report)
              for report in sorted((workdir / "scores").glob("*.json")) if report.with_suffix(".pkl").is_file()}
    return {"splits": splits, "runs": runs, "scores": scores}


def output_lines(outputs: dict) -> list[str]:
    lines = []
    for name, split in outputs["splits"].items():
        stale = split["changed"] + split["now extracted"]
        todo = (f"build-splits would rewrite it ({split['changed']:,} videos re-extracted, "
                f"{split['now extracted']:,} missing ones now extracted)" if stale else "up to date")
        lines.append(f"{name}: {split['train']:,} train, {split['test']:,} test, {split['missing']:,} missing; {todo}")
    for name, run in outputs["runs"].items():
        best = (f"best validation mean class {run['best val mean class']:.4f} (epoch {run['best epoch']})"
                if run["best epoch"] is not None else "no epoch finished")
        resume = "; `train --resume` continues it" if run["last checkpoint"] else ""
        lines.append(f"{name}: {run['epochs done']:,} epochs done, {best}{resume}")
    for name, score in outputs["scores"].items():
        if score.get("unreadable"):
            lines.append(f"{name}: its accuracies file is unreadable; run `tsnpipe test` again to rewrite it")
            continue
        figures = ", ".join(f"{label} {score[key]:.4f}" for key, label in
                            (("top1", "top-1"), ("top5", "top-5"), ("mean_class", "mean class")) if key in score)
        lines.append(f"{name}: {score.get('videos', '?')} videos, {figures}")
    return lines
