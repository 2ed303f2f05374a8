"""`tsnpipe status`: what the next run of each stage will do, in the order the chain runs.

Per-video stages (frames, flow, pack): videos up to date, and videos needing work by reason, judged
against the stage's last run exactly as the runner would judge them (a touched file whose content is
the same is not reported). Then the split folders (would `build-splits` change them?), the training
runs (epochs done, best accuracy) and the score files (their accuracies). A damaged manifest is named
with its fix; `--repair` sets it aside and rebuilds its rows from the outputs on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tsnpipe.manifests.decide import REASONS
from tsnpipe.manifests.files import ManifestError
from tsnpipe.manifests.table import Manifest, stages_present
from tsnpipe.options import workdir_option
from tsnpipe.planning import Candidates
from tsnpipe.runner import Stage, plan_stage, run_info_path
from tsnpipe.stages.errors import TsnpipeError

CHAIN = ("frames", "flow", "pack-lmdb", "pack-hdf5")


class Manifests(dict):
    """Each manifest of a workdir read once per command, however many stages look at it (as columns: no row
    becomes a dict unless it has work to do)."""

    def __init__(self, workdir: Path):
        super().__init__()
        self.workdir = workdir
        self.items_of: dict[str, list] = {}  # items built from the manifests, shared by the stages that read them

    def __missing__(self, name: str) -> Manifest:
        self[name] = Manifest(self.workdir, name)
        return self[name]


def stage_items(workdir: Path, name: str, info: dict, manifests: Manifests) -> Candidates:
    """The videos the stage would look at now: frames rescans its video folder, flow, pack and features read the
    frames manifest; other stages list their own rows."""
    inputs = info["inputs"]
    if name == "frames" and inputs.get("video_dir") and Path(inputs["video_dir"]).is_dir():
        from tsnpipe.cmd_frames import video_items

        return video_items(Path(inputs["video_dir"]))
    if name == "flow" and len(manifests["frames"]):
        from tsnpipe.cmd_flow import flow_items

        return flow_items(workdir, manifests["frames"])
    if name.startswith("pack-") and len(manifests["frames"]):
        from tsnpipe.cmd_pack import pack_items

        if "pack items" not in manifests.items_of:  # both formats pack the same videos
            manifests.items_of["pack items"] = pack_items(workdir, manifests["frames"], manifests["flow"])
        return manifests.items_of["pack items"]
    if name.startswith("features-") and len(manifests["frames"]):
        from tsnpipe.cmd_features import feature_fingerprints, flow_stream_of

        flow_stream = flow_stream_of(info["params"])
        return feature_fingerprints(manifests["frames"], manifests["flow"] if flow_stream else None, flow_stream)
    own = manifests[name].columns(["video_id", "source", "fingerprint"])
    return Candidates(own["video_id"].to_pylist(), [source or "" for source in own["source"].to_pylist()],
                      fingerprints=[text or "{}" for text in own["fingerprint"].to_pylist()])


def run_info(workdir: Path, name: str) -> dict:
    path = run_info_path(workdir, name)
    try:
        info = json.loads(path.read_text()) if path.exists() else {}
    except (ValueError, UnicodeDecodeError):
        info = {}  # rewritten by the stage's next run; judged as if its params were unknown
    return {"params": info.get("params", {}), "inputs": info.get("inputs", {})} if isinstance(info, dict) else {}


def stage_status(workdir: Path, name: str, manifests: Manifests | None = None) -> dict:
    """Counts of up-to-date rows and of rows needing work per reason, judged against the stage's last run."""
    import os

    manifests = Manifests(workdir) if manifests is None else manifests
    info = run_info(workdir, name) or {"params": {}, "inputs": {}}
    stage = Stage(name=name, verb="", params=info["params"], output_root="", work=None,
                  hash_content=name == "frames")  # a touched video is hashed, as the run would
    planned = plan_stage(workdir, stage, stage_items(workdir, name, info, manifests), manifests[name],
                         jobs=os.cpu_count() or 1)
    return {"up to date": planned.up_to_date, **{reason: 0 for reason in REASONS}, **planned.reasons()}


def chain_order(names: list[str]) -> list[str]:
    return [name for name in CHAIN if name in names] + sorted(name for name in names if name not in CHAIN)


def manifest_report(workdir: Path, manifests: Manifests | None = None) -> tuple[dict, list[str]]:
    """{stage: counts} for every per-video stage, and the sentences of the damaged ones."""
    report, damaged = {}, []
    manifests = Manifests(workdir) if manifests is None else manifests
    for name in chain_order(stages_present(workdir)):
        try:
            report[name] = stage_status(workdir, name, manifests)
            if name not in ("frames", "flow"):  # only frames and flow are read again (by the splits' report)
                manifests.pop(name, None)
        except (ManifestError, TsnpipeError) as error:
            report[name] = {"damaged": str(error)}
            damaged.append(str(error))
    return report, list(dict.fromkeys(damaged))  # a damaged frames table also stops flow and pack: one manifest


@click.command("status")
@workdir_option
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--repair", is_flag=True,
              help="Set damaged or lost manifests aside and rebuild their rows from the complete outputs on disk.")
def status(workdir, as_json, repair):
    """What the next run of each stage will do, in chain order: per-video stages (videos up to date, and videos
    needing work by reason: new, input changed, params changed, output missing, failed before), then splits,
    training runs (epochs done, best accuracy) and score files (accuracies)."""
    from tsnpipe.shard_status import fold_when_idle, shard_json, shard_lines
    from tsnpipe.status_outputs import outputs_report, output_lines

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise click.ClickException(f"{workdir} is not a tsnpipe workdir (no such folder); run a stage first.")
    if repair:
        from tsnpipe.manifests.files import WorkdirLock
        from tsnpipe.repair import repair_workdir

        with WorkdirLock(workdir, "tsnpipe status --repair"):
            for line in repair_workdir(workdir):
                click.echo(line)
    fold_when_idle(workdir)  # shard journals into their tables, unless shards (or a run) hold the workdir
    manifests = Manifests(workdir)
    report, damaged = manifest_report(workdir, manifests)
    outputs = outputs_report(workdir, report, manifests)
    if as_json:
        shards = shard_json(workdir, list(report))
        click.echo(json.dumps({**report, **outputs, **({"shards": shards} if shards else {})}, indent=2))
    else:
        if not report and not any(outputs.values()):
            click.echo(f"{workdir}: no stage has run yet.")
        for name, counts in report.items():
            if "damaged" in counts:
                click.echo(f"{name:<10} damaged; see below")
                continue
            todo = {k: v for k, v in counts.items() if k != "up to date" and v}
            needs = ", ".join(f"{v:,} {k}" for k, v in todo.items()) or "nothing"
            click.echo(f"{name:<10} {counts['up to date']:>7,} up to date; needs work: {needs}")
            for line in shard_lines(workdir, name):
                click.echo(line)
        for line in output_lines(outputs):
            click.echo(line)
    if damaged:
        raise click.ClickException(damaged[0] if len(damaged) == 1 else
                                   f"{len(damaged)} manifests are damaged, first: {damaged[0]}")
