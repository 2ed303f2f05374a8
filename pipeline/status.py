"""`tsnpipe status`: per stage, how many videos are up to date and how many need work, and why."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tsnpipe.manifests.decide import REASONS
from tsnpipe.manifests.table import Manifest, stages_present
from tsnpipe.options import workdir_option
from tsnpipe.runner import Item, Stage, plan, run_info_path


def stage_items(workdir: Path, name: str, inputs: dict, manifest: Manifest) -> list[Item]:
    """The items the stage would look at now: frames rescans its video folder, flow reads the frames
    manifest; other stages list their own rows."""
    if name == "frames" and inputs.get("video_dir") and Path(inputs["video_dir"]).is_dir():
        from tsnpipe.cmd_frames import video_items

        return video_items(Path(inputs["video_dir"]))
    if name == "flow" and Manifest(workdir, "frames").rows:
        from tsnpipe.cmd_flow import flow_items

        return flow_items(workdir)
    return [Item(video_id=row["video_id"], source=row.get("source") or "",
                 fingerprint=json.loads(row.get("fingerprint") or "{}")) for row in manifest.rows.values()]


def stage_status(workdir: Path, name: str) -> dict:
    """Counts of up-to-date rows and of rows needing work per reason, judged against the stage's last run."""
    manifest = Manifest(workdir, name)
    info_path = run_info_path(workdir, name)
    info = json.loads(info_path.read_text()) if info_path.exists() else {"params": {}, "inputs": {}}
    stage = Stage(name=name, verb="", params=info["params"], output_root="", work=None, hash_content=False)
    items = stage_items(workdir, name, info.get("inputs", {}), manifest)
    counts = {"up to date": 0, **{reason: 0 for reason in REASONS}}
    for _, why in plan(workdir, stage, items, manifest):
        counts[why or "up to date"] += 1
    return counts


@click.command("status")
@workdir_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def status(workdir, as_json):
    """Per stage: videos up to date, and videos needing work by reason (new, input changed, params changed,
    output missing, failed before), judged against each stage's last run."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise click.ClickException(f"{workdir} is not a tsnpipe workdir (no such folder); run a stage first.")
    report = {name: stage_status(workdir, name) for name in stages_present(workdir)}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo(f"{workdir}: no stage has run yet.")
    for name, counts in report.items():
        todo = {k: v for k, v in counts.items() if k != "up to date" and v}
        needs = ", ".join(f"{v:,} {k}" for k, v in todo.items()) or "nothing"
        click.echo(f"{name:<10} {counts['up to date']:>7,} up to date; needs work: {needs}")
