"""The report's sections about the per-video stages: what ran, what failed and why, the data, a sample.

Each function takes the stage tables (manifest columns, read by the caller) and returns HTML. Work is
bounded whatever the number of videos: sums and histograms over columns, at most `MAX_FAILURES` failure
rows and `SAMPLE_VIDEOS` videos in the contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tsnpipe.stages.report import figures
from tsnpipe.stages.report.collect import StageTable, feature_shapes, split_lists
from tsnpipe.stages.report.html import esc, image, table

MAX_FAILURES = 1000  # rows shown; the manifests hold them all
SAMPLE_VIDEOS = 6
SESSION_GAP_S = 300  # rows started further apart than this belong to different runs of the stage
UNITS = {"frames": ("frames", "frames"), "flow": ("pairs", "pairs")}


def last_session(rows: pd.DataFrame) -> tuple[int, float]:
    """(videos, wall seconds) of the stage's latest run, told from the rows' start times and durations."""
    if rows["started_at"].isna().all():
        return 0, 0.0
    start = pd.to_datetime(rows["started_at"], errors="coerce")
    seconds = pd.to_numeric(rows["seconds"], errors="coerce").fillna(0.0)
    valid = start.notna()
    if not valid.any():
        return 0, 0.0
    begin = (start[valid] - start[valid].min()).dt.total_seconds().to_numpy()
    end = begin + seconds[valid].to_numpy()
    order = np.argsort(begin, kind="stable")
    begin, end = begin[order], end[order]
    reach = np.maximum.accumulate(end)
    breaks = np.nonzero(begin[1:] > reach[:-1] + SESSION_GAP_S)[0]
    first = breaks[-1] + 1 if len(breaks) else 0
    return len(begin) - first, float(max(reach[-1] - begin[first], 1.0))


def stage_summary(stages: list[StageTable]) -> str:
    header = ["stage", "videos", "done", "up to date", "failed", "worker time", "median per video",
              "last run: videos", "wall", "throughput"]
    rows = []
    for stage in stages:
        frame = stage.rows
        status = frame["status"].fillna("")
        done = status == "done"
        current = done & (frame["params_hash"] == stage.params_hash) if stage.params_hash else done
        seconds = pd.to_numeric(frame["seconds"], errors="coerce")
        videos, wall = last_session(frame)
        unit, column = UNITS.get(stage.name, ("videos", None))
        amount = pd.to_numeric(frame[column], errors="coerce").sum() if column in frame else None
        timed = seconds[done].notna().any() and wall > 0  # a stage that records no times (pack) shows none
        rate = f"{videos / wall:.2f} videos/s" if timed else ""
        if timed and amount is not None and seconds[done].sum() > 0:
            rate += f"; {amount / seconds[done].sum():.1f} {unit} per worker-s"
        rows.append([stage.name, f"{len(frame):,}", f"{int(done.sum()):,}", f"{int(current.sum()):,}",
                     f"{int((~done).sum()):,}", duration(seconds.sum()) if timed else "",
                     f"{seconds[done].median():.2f} s" if timed else "", f"{videos:,}" if timed else "",
                     duration(wall) if timed else "", rate])
    note = ('<p class="note">up to date: done with the parameters of the stage\'s last run; worker time: the sum of '
            "the videos' own times; wall and throughput: the stage's latest run, told from the rows' start "
            "times.</p>")
    return table(header, rows, numeric=set(range(1, 10))) + note if rows else "<p>No stage has run in this folder.</p>"


def duration(seconds: float) -> str:
    seconds = float(seconds or 0.0)
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"


def failures(stages: list[StageTable]) -> str:
    parts = [stage.rows.loc[stage.rows["status"].fillna("") != "done", ["video_id", "error"]].assign(stage=stage.name)
             for stage in stages]
    failed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["video_id", "error", "stage"])
    if failed.empty:
        return '<p class="ok">No video failed.</p>'
    failed["error"] = failed["error"].fillna("(no reason recorded)").astype(str)
    # the same reason for many videos: counted once, the file's path (which starts most messages) left out
    reasons = failed.assign(reason=failed["error"].str.replace(r"^/\S*: ", "", regex=True).str.split("\n").str[0])
    common = reasons.groupby(["stage", "reason"]).size().sort_values(ascending=False).head(20)
    summary = table(["stage", "reason", "videos"], [[stage, reason, f"{n:,}"] for (stage, reason), n in common.items()],
                    numeric={2}, classes={1: "err"})
    shown = failed.sort_values(["stage", "video_id"], kind="stable").head(MAX_FAILURES)
    rows = [[r.video_id, r.stage, r.error] for r in shown.itertuples()]
    more = (f'<p class="note">{len(failed) - len(shown):,} more failures are in the manifests '
            f"(tsnpipe status lists them).</p>" if len(failed) > len(shown) else "")
    opened = " open" if len(shown) <= 50 else ""
    return (f'<p class="bad">{len(failed):,} failed</p>{summary}<details{opened}><summary>every failed video '
            f"({len(shown):,} shown)</summary>"
            + table(["video", "stage", "reason"], rows, sortable=True, classes={2: "err"}, table_id="failed-videos")
            + f"</details>{more}")


def data(workdir: Path, frames: StageTable | None) -> str:
    parts = []
    if frames is not None:
        uri = figures.data_histograms(frames.rows)
        parts.append(image(uri, "duration, frame rate and resolution histograms"))
    for name, lists in split_lists(workdir).items():
        counts = ", ".join(f"{list_name} {len(names):,} videos of {names.nunique()} classes"
                           for list_name, names in lists.items())
        parts.append(f"<h3>class balance: {esc(name)}</h3><p>{esc(counts)}</p>"
                     + image(figures.class_balance(lists), f"class balance of {name}"))
    return "".join(parts) or "<p>No frames extracted and no split built yet.</p>"


def sample_ids(frames: pd.DataFrame, count: int = SAMPLE_VIDEOS) -> list[str]:
    """`count` decoded videos spread evenly over the sorted ids (the same ones each time)."""
    done = frames.loc[frames["status"] == "done", "video_id"].sort_values(kind="stable").to_numpy()
    if not len(done):
        return []
    return list(dict.fromkeys(done[np.linspace(0, len(done) - 1, min(count, len(done))).round().astype(int)]))


def samples(workdir: Path, frames: StageTable | None, flow: StageTable | None) -> str:
    if frames is None:
        return "<p>No frames extracted yet.</p>"
    chosen = sample_ids(frames.rows)
    outputs = frames.rows.set_index("video_id").loc[chosen, "output"]
    flow_outputs = {}
    if flow is not None:
        picked = flow.rows[flow.rows["video_id"].isin(chosen) & (flow.rows["status"] == "done")]
        flow_outputs = dict(zip(picked["video_id"], picked["output"]))
    bound = float((flow.run_params if flow else {}).get("bound", 20.0))
    videos = [(workdir / outputs[v], workdir / flow_outputs[v] if v in flow_outputs else None) for v in chosen]
    sheet = figures.contact_sheet(videos, bound)
    if sheet is None:
        return "<p>No frames found on disk for the sampled videos.</p>"
    names = "".join(f"<li>{esc(v)}{'' if v in flow_outputs else ' (no flow)'}</li>" for v in chosen)
    legend = (f'<div class="legend">{image(figures.legend(bound), "flow colour wheel")}<p>Flow colour: the hue is the '
              f"direction of motion, the saturation its speed, full at {bound:g} px per frame pair (the flow's bound, "
              "fixed for all videos so they compare; darker beyond it). Each frame is followed by the flow "
              "leaving it.</p></div>")
    done = int((frames.rows["status"] == "done").sum())
    return (f"<p>{len(chosen)} of {done:,} videos, top to bottom:</p><ol>{names}</ol>"
            + image(sheet, "contact sheet of frames and flow") + legend)


def features(workdir: Path, stages: list[StageTable]) -> str:
    rows = []
    for stage in stages:
        if not stage.name.startswith("features-"):
            continue
        params = stage.run_params
        done = stage.rows[stage.rows["status"] == "done"]
        shapes = {}
        if len(done):
            first = done.iloc[0]
            folder = workdir / str(first["output"]).rsplit(str(first["video_id"]), 1)[0]
            shapes = feature_shapes(folder, first["video_id"])
        streams = "; ".join(f"{s.get('name', '')}: {s.get('modality', '?')} {s.get('backbone', s.get('arch', ''))}, "
                            f"checkpoint {str(s.get('hash', ''))[:12]}" for s in params.get("streams", []))
        shown = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
        rows.append([stage.name.removeprefix("features-"), f"{len(done):,}", f"{len(stage.rows) - len(done):,}",
                     params.get("layer", ""), streams, shown])
    if not rows:
        return "<p>No feature set extracted (tsnpipe extract-features).</p>"
    return table(["set", "videos", "failed", "layer", "streams (checkpoint)", "shapes of one video"], rows,
                 numeric={1, 2})
