"""The report's pictures, each returned as a `data:image/png;base64,...` URI so the page carries them inline.

matplotlib's object API (Figure + Agg) draws the charts without a display or global state; the contact sheet
of frames and flow is composed with numpy and encoded with OpenCV, which is quicker and smaller than a plot.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from tsnpipe.stages.report.wheel import flow_to_rgb, wheel_legend

DPI = 72
TILE_HEIGHT = 72  # pixels of one frame or flow tile in the contact sheet
NAMED_CLASSES_MAX = 40  # above this, the class balance chart shows counts by rank instead of names


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return png_uri(buffer.getvalue())


def array_uri(rgb: np.ndarray) -> str:
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    return png_uri(encoded.tobytes())


def data_histograms(frames: pd.DataFrame) -> str | None:
    """Duration, frame rate and resolution of the decoded videos (the frames manifest's source facts)."""
    from matplotlib.figure import Figure

    done = frames[frames["status"] == "done"] if "status" in frames else frames
    if done.empty:
        return None
    figure = Figure(figsize=(12, 3), layout="constrained")
    duration_axes, fps_axes, size_axes = figure.subplots(1, 3)
    duration = pd.to_numeric(done.get("duration"), errors="coerce").dropna()
    duration_axes.hist(duration, bins=min(40, max(5, len(duration) // 5)), color="#4c72b0")
    duration_axes.set_xlabel("duration (s)")
    fps = pd.to_numeric(done.get("src_fps"), errors="coerce").dropna().round(2)
    counts = fps.value_counts().sort_index()
    fps_axes.bar([f"{v:g}" for v in counts.index[:12]], counts.values[:12], color="#55a868")
    fps_axes.set_xlabel("source frame rate (fps)")
    sizes = (done["src_width"].astype("Int64").astype(str) + "x" + done["src_height"].astype("Int64").astype(str))
    common = sizes.value_counts().head(8)
    size_axes.barh(list(common.index)[::-1], list(common.values)[::-1], color="#c44e52")
    size_axes.set_xlabel("videos")
    size_axes.set_title(f"source resolution ({sizes.nunique()} distinct)", fontsize=10)
    for axes in (duration_axes, fps_axes):
        axes.set_ylabel("videos")
    return figure_uri(figure)


def class_balance(splits: dict[str, pd.Series]) -> str | None:
    """Videos per class in each list of a split (`{"train": class names, "test": ...}`)."""
    from matplotlib.figure import Figure

    splits = {name: names for name, names in splits.items() if len(names)}
    if not splits:
        return None
    counts = pd.DataFrame({name: names.value_counts() for name, names in splits.items()}).fillna(0)
    named = len(counts) <= NAMED_CLASSES_MAX
    figure = Figure(figsize=(12, 3.2 if named else 2.8), layout="constrained")
    axes = figure.add_subplot()
    if named:
        counts.sort_index().plot.bar(ax=axes, width=0.8)
        axes.tick_params(axis="x", labelsize=7)
    else:  # hundreds of classes: each list's counts sorted, so imbalance shows as a slope
        for name in counts.columns:
            axes.plot(np.sort(counts[name].to_numpy())[::-1], label=name)
        axes.set_xlabel(f"classes, by size ({len(counts)})")
        axes.legend()
    axes.set_ylabel("videos")
    return figure_uri(figure)


def curves(metrics: pd.DataFrame, title: str) -> str:
    """Loss and accuracy per epoch of one training run."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.2), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    lines = [(loss_axes, "train_loss", "train"), (loss_axes, "val_loss", "validation"),
             (accuracy_axes, "train_top1", "train top-1"), (accuracy_axes, "val_top1", "validation top-1"),
             (accuracy_axes, "val_mean_class", "validation mean class")]
    for axes, column, label in lines:
        if column in metrics and metrics[column].notna().any():
            drawn = metrics.dropna(subset=[column])
            axes.plot(drawn["epoch"], drawn[column], marker=".", label=label)
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        if axes.lines:
            axes.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure_uri(figure)


def confusion(matrix: np.ndarray, class_names: list[str], title: str) -> str:
    from tsnpipe.stages.scores.report import confusion_figure

    figure = confusion_figure(matrix, class_names, title)
    figure.set_size_inches(min(figure.get_size_inches()[0], 10), min(figure.get_size_inches()[1], 8.5))
    return figure_uri(figure)


def tile(image: np.ndarray) -> np.ndarray:
    import cv2

    width = max(1, round(image.shape[1] * TILE_HEIGHT / image.shape[0]))
    return cv2.resize(image, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)


def contact_sheet(videos: list[tuple[Path, Path | None]], bound: float, columns: int = 4) -> str | None:
    """One row per video: `columns` frames spread over it, each followed by the flow leaving it in colour.

    `videos` are (frames folder, flow folder or None); flow images are the 8-bit x/y pair of the flow stage,
    mapped back to pixels with its `bound` and coloured at that fixed scale."""
    import cv2

    rows = []
    for frames_dir, flow_dir in videos:
        names = sorted(p.name for p in frames_dir.glob("img_*.jpg"))
        if not names:
            continue
        picks = np.unique(np.linspace(0, max(0, len(names) - 2), columns).round().astype(int))
        tiles = []
        for index in picks:
            frame = cv2.imread(str(frames_dir / names[index]))
            if frame is None:
                continue
            tiles.append(tile(frame[..., ::-1]))
            flow = read_flow(flow_dir, index + 1, bound) if flow_dir is not None else None
            blank = np.full_like(tiles[-1], 255)
            tiles.append(tile(flow_to_rgb(*flow, scale=bound)) if flow is not None else blank)
        if tiles:
            rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 1))
    if not rows:
        return None
    width = max(row.shape[1] for row in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    return array_uri(sheet)


def read_flow(flow_dir: Path, pair: int, bound: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Pair `pair`'s flow (u, v) in pixels from flow_x_/flow_y_ JPEG or PNG images, or None when absent."""
    import cv2

    for ext in ("jpg", "png"):
        x, y = flow_dir / f"flow_x_{pair:05d}.{ext}", flow_dir / f"flow_y_{pair:05d}.{ext}"
        if x.exists() and y.exists():
            u, v = cv2.imread(str(x), cv2.IMREAD_GRAYSCALE), cv2.imread(str(y), cv2.IMREAD_GRAYSCALE)
            if u is None or v is None:
                return None
            scale = 2.0 * bound / 255.0
            return u.astype(np.float32) * scale - bound, v.astype(np.float32) * scale - bound
    return None


def legend(bound: float) -> str:
    return array_uri(wheel_legend(scale=bound))
