"""`write_report(workdir, stages, out)`: the whole page from the stage tables and the files of the work folder."""

from __future__ import annotations

from pathlib import Path

from tsnpipe.stages.report import collect, sections
from tsnpipe.stages.report.html import page, write_page
from tsnpipe.stages.report.runs import fusion_section, run_section


def build_page(workdir: Path, stages: list[collect.StageTable]) -> str:
    by_name = {stage.name: stage for stage in stages}
    runs = collect.runs(workdir)
    runs_html = "".join(run_section(run) for run in runs) or "<p>No training run yet (tsnpipe train).</p>"
    return page(f"tsnpipe report: {workdir.resolve()}", [
        ("stages", "Stages", sections.stage_summary(stages)),
        ("failures", "Failures", sections.failures(stages)),
        ("data", "Data", sections.data(workdir, by_name.get("frames"))),
        ("samples", "Sample of frames and flow", sections.samples(workdir, by_name.get("frames"), by_name.get("flow"))),
        ("runs", "Training runs", runs_html),
        ("fusion", "Fusion", fusion_section(workdir)),
        ("features", "Features", sections.features(workdir, stages)),
    ])


def write_report(workdir: Path, stages: list[collect.StageTable], out: Path) -> Path:
    return write_page(out, build_page(Path(workdir), stages))
