"""`tsnpipe report`: a score file's confusion matrix and per-class CSV, or (-w W --html) the work folder's page.

The page's code lives in `stages/report/`; this module reads the manifests for it, column by column (a few
columns of 240,000 rows read in well under a second), and the record of each stage's last run.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

# what the page reads of every stage's rows, and of some stages more
COMMON_COLUMNS = ["video_id", "status", "error", "seconds", "started_at", "params_hash", "output"]
STAGE_COLUMNS = {"frames": ["frames", "duration", "src_fps", "src_width", "src_height"], "flow": ["pairs"]}
DEFAULT_NAME = "report.html"


def stage_tables(workdir: Path) -> list:
    """Every stage that has rows in W/manifests/, in chain order, with its last run's parameters."""
    from tsnpipe.manifests.columns import load_columns
    from tsnpipe.manifests.table import stages_present
    from tsnpipe.stages.report.collect import StageTable
    from tsnpipe.status import chain_order

    tables = []
    for name in chain_order(stages_present(workdir)):
        rows = load_columns(workdir, name, COMMON_COLUMNS + STAGE_COLUMNS.get(name, []))
        if rows.empty:
            continue
        record = workdir / "manifests" / f"{name}.run.json"
        try:
            run = json.loads(record.read_text()) if record.is_file() else {}
        except (OSError, ValueError):
            run = {}
        tables.append(StageTable(name, rows, run.get("params", {}), run.get("params_hash")))
    return tables


def write_workdir_report(workdir: Path, out: Path | None = None) -> Path:
    """Write the work folder's HTML page (W/report.html by default) and return its path."""
    from tsnpipe.stages.report.build import write_report
    from tsnpipe.stages.scores.outputs import check_writable

    workdir = Path(workdir)
    if not workdir.is_dir():
        raise click.ClickException(f"The work folder {workdir} does not exist; give the -w of a run.")
    out = check_writable(out or workdir / DEFAULT_NAME)
    return write_report(workdir, stage_tables(workdir), out)


existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("report")
@click.argument("scores", type=existing_file, required=False)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the PNG and CSV of SCORES. Default: next to SCORES.")
@click.option("--workdir", "-w", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A work folder: write its HTML page (with --html).")
@click.option("--html", "html_out", is_flag=False, flag_value="", default=None, metavar="[OUT.html]",
              type=click.Path(dir_okay=False), help="Write one self-contained HTML page of the work folder "
                                                    "(default W/report.html).")
def report(scores, out_dir, workdir, html_out):
    """Write a confusion-matrix PNG and a per-class accuracy CSV for a score file (multi-label: a per-class AP CSV);
    or, with -w W --html, one HTML page of the whole work folder.

    The matrix is row-normalised (each true class's videos sum to 1); with more than 60 classes the axes
    show class indices, which the CSV's class_index column maps to names. The CSV also names the class
    each class is most often mistaken for.

    The HTML page holds everything inline (pictures as data, no script or font from elsewhere), so it opens
    offline from file://: per stage the videos done, failed and up to date with their times; every failure with
    its reason; histograms of duration, frame rate and resolution and the class balance per split; a contact
    sheet of sampled frames and their flow; per training run the curves, the confusion matrix, per-class
    accuracy and the most confused pairs; the fusion; the feature sets.

    \b
    Examples:
      tsnpipe report -w work --html                 # work/report.html
      tsnpipe report -w work --html /tmp/run.html
      tsnpipe report work/scores/rgb-1a2b3c4d.pkl
    """
    if html_out is not None or (workdir is not None and scores is None):
        if workdir is None:
            raise click.UsageError("--html writes the page of a work folder: give it with -w W.")
        path = write_workdir_report(workdir, Path(html_out) if html_out else None)
        click.echo(f"report: wrote {path} ({path.stat().st_size / 1e6:.2f} MB); open it in a browser")
        if scores is None:
            return
    if scores is None:
        raise click.UsageError("Give a score file (report SCORES.pkl) or a work folder (report -w W --html).")
    score_report(scores, out_dir)


def score_report(scores: Path, out_dir: Path | None) -> None:
    from tsnpipe.stages.scores.outputs import check_writable
    from tsnpipe.stages.scores.report import write_report

    if out_dir is not None:
        check_writable(Path(out_dir) / "report.csv")
    result = write_report(scores, out_dir)
    accuracy = result.accuracies
    if "map" in accuracy:  # multi-label: per-class average precision instead of a confusion matrix
        click.echo(f"report: {scores}: {result.videos:,} videos, {result.classes} classes, multi-label; "
                   f"mAP {100 * accuracy['map']:.2f}%")
    else:
        click.echo(f"report: {scores}: {result.videos:,} videos, {result.classes} classes; top-1 "
                   f"{100 * accuracy['top1']:.2f}%, top-5 {100 * accuracy['top5']:.2f}%, "
                   f"mean class {100 * accuracy['mean_class']:.2f}%")
        click.echo(f"wrote {result.confusion_png}")
    click.echo(f"wrote {result.per_class_csv}")
