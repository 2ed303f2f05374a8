"""What `tsnpipe status` does with shards: fold the shard journals in when no run holds the workdir, and
otherwise show each shard's progress and first failures beside its stage."""

from __future__ import annotations

from pathlib import Path

from tsnpipe.manifests.files import ManifestError, WorkdirLock
from tsnpipe.manifests.shards import fold_all, shard_journals, shard_report
from tsnpipe.manifests.table import stages_present


def fold_when_idle(workdir: Path) -> int:
    """Fold every stage's shard journals into its table when the workdir lock is free (no shard, no run);
    returns the stages folded. A busy or read-only workdir is left as it is: status then reads the shard
    journals as they are."""
    stages = [name for name in stages_present(workdir) if shard_journals(workdir, name)]
    if not stages:
        return 0
    try:
        with WorkdirLock(workdir, "tsnpipe status (folding shards)"):
            return fold_all(workdir, stages)
    except ManifestError:
        return 0


def shard_lines(workdir: Path, stage: str) -> list[str]:
    """One line per shard of `stage` whose rows are not folded yet."""
    lines = []
    for shard, facts in shard_report(workdir, stage).items():
        state = "running" if facts["running"] else "stopped"
        line = f"  shard {shard:<7} {state}; {facts['done']:,} done, {facts['failed']:,} failed since the last fold"
        if facts["videos"] is not None:
            line += f", of {facts['videos']:,} videos in the shard"
        if facts["first failed"]:
            line += " (" + ", ".join(facts["first failed"]) + (", ..." if facts["failed"] > 3 else "") + ")"
        if facts["damaged lines"]:
            line += f"; {facts['damaged lines']} damaged journal line(s)"
        lines.append(line)
    return lines


def shard_json(workdir: Path, stages: list[str]) -> dict:
    return {stage: report for stage in stages if (report := shard_report(workdir, stage))}
