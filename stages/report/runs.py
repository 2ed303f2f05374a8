"""The report's sections about models: each training run's curves and test scores, and the fused scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.report import figures
from tsnpipe.stages.report.collect import Run, most_confused
from tsnpipe.stages.report.html import esc, image, table


def percent(value: float) -> str:
    return "" if value is None or np.isnan(value) else f"{100 * value:.1f}%"


def run_section(run: Run) -> str:
    parts = [f"<h3>{esc(run.name)}</h3>"]
    if run.metrics is not None and "epoch" in run.metrics and len(run.metrics):
        metrics = run.metrics
        if "val_mean_class" in metrics and metrics["val_mean_class"].notna().any():
            best = metrics.loc[metrics["val_mean_class"].idxmax()]
            parts.append(f"<p>{len(metrics)} epochs; best validation mean class accuracy "
                         f"{percent(best['val_mean_class'])} at epoch {int(best['epoch'])}"
                         + (f"; {metrics['seconds'].sum():.0f} s of training" if "seconds" in metrics else "") + "</p>")
        parts.append(image(figures.curves(metrics, run.name), f"curves of {run.name}"))
    else:
        parts.append('<p class="note">No metrics.csv (training has not finished an epoch).</p>')
    if run.scores is not None:
        parts.append(scores_section(run.scores))
    return "".join(parts)


def scores_section(path: Path) -> str:
    """Accuracy, the normalised confusion matrix, per-class accuracy worst first, and the most confused pairs."""
    from tsnpipe.stages.scores.files import accuracies, read_scores
    from tsnpipe.stages.scores.report import confusion_matrix, per_class_table

    try:
        content = read_scores(path)
    except TsnpipeError as error:
        return f'<p class="bad">{esc(error)}</p>'
    if content.get("targets") is not None:
        return f"<p>{esc(path.name)}: multi-label scores (see tsnpipe report {esc(path)} for per-class AP).</p>"
    scores, labels, names = content["scores"], content["labels"], list(content["class_names"])
    result = accuracies(scores, labels)
    matrix = confusion_matrix(scores, labels)
    title = (f"{path.name}: top-1 {percent(result['top1'])}, mean class {percent(result['mean_class'])} "
             f"({len(labels)} videos)")
    per_class = per_class_table(matrix, names).sort_values(["accuracy", "class_name"], kind="stable")
    class_rows = [[r.class_name, r.videos, r.correct, percent(r.accuracy), r.most_confused_with]
                  for r in per_class.itertuples()]
    pairs = [[true, predicted, count, percent(share)] for true, predicted, count, share in most_confused(matrix, names)]
    return (f"<p><b>test scores</b> {esc(title)}</p>"
            + image(figures.confusion(matrix, names, title), f"confusion matrix of {path.name}")
            + "<details open><summary>per-class accuracy, worst first</summary>"
            + table(["class", "videos", "correct", "accuracy", "most confused with"], class_rows, numeric={1, 2, 3},
                    sortable=True) + "</details>"
            + ("<p><b>most confused pairs</b></p>"
               + table(["true class", "predicted as", "videos", "share of the class"], pairs, numeric={2, 3})
               if pairs else ""))


def fusion_section(workdir: Path) -> str:
    """The fused score file the chain wrote: its weights, inputs, and each input's accuracy beside the fused one."""
    from tsnpipe.stages.scores.files import accuracies, read_scores

    fused_files = sorted((workdir / "scores").glob("fused*.pkl"))
    if not fused_files:
        return "<p>No fused scores (tsnpipe fuse ... --out W/scores/fused.pkl).</p>"
    parts = []
    for path in fused_files:
        try:
            content = read_scores(path)
        except TsnpipeError as error:
            parts.append(f'<p class="bad">{esc(error)}</p>')
            continue
        aggregation = content["aggregation"]
        rows = []
        for source, weight in zip(aggregation.get("inputs", []), aggregation.get("weights", [])):
            source_path = Path(source["path"])
            try:
                other = read_scores(source_path)
                result = accuracies(other["scores"], other["labels"])
            except TsnpipeError:
                result = {"top1": float("nan"), "mean_class": float("nan")}
            rows.append([source_path.name, source["aggregation"].get("modality", ""), f"{weight:g}",
                         percent(result["top1"]), percent(result["mean_class"])])
        if content.get("targets") is None:
            result = accuracies(content["scores"], content["labels"])
            rows.append([path.name, aggregation.get("modality", ""), "fused", percent(result["top1"]),
                         percent(result["mean_class"])])
        searched = aggregation.get("weights_searched_on")
        how = (f"weights searched on {', '.join(Path(p).name for p in searched)}" if searched else "weights given")
        parts.append(f"<p>{esc(path.name)}: {esc(aggregation.get('fusion', ''))} scores, {esc(how)}</p>"
                     + table(["scores", "modality", "weight", "top-1", "mean class"], rows, numeric={2, 3, 4}))
    return "".join(parts)
