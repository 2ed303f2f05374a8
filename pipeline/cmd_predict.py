"""`tsnpipe predict`: the top classes of one new video, from one checkpoint or several fused.

The frames are decoded as the checkpoint's training frames were: the frame rate and size come from
`W/manifests/frames.run.json` of the work folder the checkpoint was trained on (found through the
split and store paths the checkpoint records), `--fps` / `--size` override them, and where nothing is
recorded the extract-frames defaults (10 fps, short side 256) are used and the command says so. The flow
settings come from that folder's `flow.run.json` the same way. torch is imported inside the command.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import click

from tsnpipe.cmd_fuse import WeightsType
from tsnpipe.cmd_frames import describe as describe_frames, frame_params
from tsnpipe.options import SizeType
from tsnpipe.runner import run_info_path
from tsnpipe.stages.scores.protocol import TEST_CROPS, TEST_SEGMENTS

DEFAULT_FPS = 10.0
DEFAULT_SIZE = ("short", 256)
DEFAULT_ON_DECODE_ERROR = "keep"  # where the training frames recorded no rule: keep what decodes of one new clip


def training_workdirs(checkpoint_params) -> list[Path]:
    """Where the checkpoint's training work folder may be: W of W/splits/<source>/split<N>, the store, or W/stores/."""
    candidates = []
    split_parents = Path(checkpoint_params.split_dir).parents if checkpoint_params.split_dir else []
    if len(split_parents) > 2:
        candidates.append(split_parents[2])
    if checkpoint_params.store:
        store = Path(checkpoint_params.store)
        candidates += [store, store.parent.parent]
    return list(dict.fromkeys(candidates))


def recorded_params(checkpoint_params, stage: str) -> tuple[dict | None, Path | None]:
    """The params the training work folder's last `stage` run recorded, and the file they came from."""
    for workdir in training_workdirs(checkpoint_params):
        path = run_info_path(workdir, stage)
        if path.is_file():
            try:
                return json.loads(path.read_text())["params"], path
            except (OSError, ValueError, KeyError):
                continue
    return None, None


def frames_for(checkpoint_params, fps: float | None, size: tuple | None, on_decode_error: str | None = None):
    """FrameParams for one checkpoint and a note saying where they came from; `on_decode_error` given overrides
    the recorded rule."""
    recorded, path = recorded_params(checkpoint_params, "frames")
    rule = DEFAULT_ON_DECODE_ERROR
    if recorded is None:
        values, origin = (DEFAULT_FPS, DEFAULT_SIZE), "not recorded with the checkpoint's data: defaults"
    else:
        fixed = recorded.get("size")
        recorded_size = (("fixed", *fixed) if fixed else ("short", recorded["short_side"]) if recorded.get("short_side")
                         else ("source",))
        values, origin = (float(recorded.get("fps", DEFAULT_FPS)), recorded_size), f"from {path}"
        rule = recorded.get("on_decode_error", DEFAULT_ON_DECODE_ERROR)
    if fps is not None or size is not None:
        values, origin = (fps or values[0], size or values[1]), f"{origin}, overridden by --fps/--size"
    return frame_params(values[0], values[1], quality=2, on_decode_error=on_decode_error or rule), origin


def flow_params_for(streams, backend: str):
    """The TV-L1 settings the first flow checkpoint's training flow used (else the defaults), on `backend`,
    paired as the checkpoint records (each flow checkpoint's own pairing is used for its own flow)."""
    from tsnpipe.stages.flow import FlowParams

    known = {f.name for f in fields(FlowParams)} - {"backend", "image_format", "pairs"}
    for stream in streams:
        if stream.params.modality == "flow":
            pairs = stream.params.flow_pairs
            recorded, path = recorded_params(stream.params, "flow")
            if recorded is not None:
                values = {key: value for key, value in recorded.items() if key in known}
                return FlowParams(backend=backend, image_format="jpg", pairs=pairs, **values), f"from {path}"
            return FlowParams(backend=backend, pairs=pairs), "not recorded with the checkpoint's data: defaults"
    return FlowParams(backend=backend), None


def table(classes: list[dict]) -> str:
    width = max(len("class"), *(len(row["class"]) for row in classes))
    lines = [f"{'rank':>4}  {'class':<{width}}  {'score':>10}"]
    lines += [f"{rank:>4}  {row['class']:<{width}}  {row['score']:10.4f}" for rank, row in enumerate(classes, 1)]
    return "\n".join(lines)


@click.command("predict")
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A .pt file written by `tsnpipe train`; repeat it to fuse streams (e.g. rgb then flow).")
@click.option("--weights", type=WeightsType(), default=None,
              help="One weight per --checkpoint, in their order, e.g. 1:1.5; raw scores are summed. Default: all 1.")
@click.option("--segments", type=click.IntRange(min=1), default=TEST_SEGMENTS, show_default=True,
              help="Snippets, at evenly spaced segment centres (as `tsnpipe test`).")
@click.option("--crops", type=click.Choice(["1", "3", "10"]), default=TEST_CROPS, show_default=True,
              help="Views per snippet: centre; 3 along the long side; 4 corners + centre and their flips.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Classes to print.")
@click.option("--fps", type=click.FloatRange(min=0.1, max=240), default=None,
              help="Decode at this rate. Default: the rate of the checkpoint's training frames, else 10.")
@click.option("--size", type=SizeType(), default=None,
              help="Resize as extract-frames --size (256, 340x256). Default: the training frames' size, else 256.")
@click.option("--on-decode-error", type=click.Choice(["fail", "keep"]), default=None,
              help="A video whose decoder reports errors: refuse it (fail) or score the frames that decode (keep). "
              "Default: the rule of the checkpoint's training frames, else keep.")
@click.option("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when there is one). Flow uses "
              "the torch TV-L1 on CUDA and OpenCV's on the CPU.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"video", "classes": [{"class", "score"}, ...], "checkpoints", "weights"} as JSON only.')
def predict(video, checkpoints, weights, segments, crops, top, fps, size, on_decode_error, device, as_json):
    """Print the top classes of VIDEO, scored by one checkpoint or several fused (RGB + flow).

    The video is decoded into a temporary folder at the checkpoint's training frame rate and size, flow
    is computed there for flow checkpoints, and each checkpoint scores SEGMENTS snippets x CROPS views as
    `tsnpipe test` does (raw scores averaged over crops, then snippets). Several checkpoints are fused
    as `tsnpipe fuse` does: the weighted sum of their raw scores.

    \b
    Examples:
      tsnpipe predict clip.avi --checkpoint W/runs/rgb/best.pt
      tsnpipe predict clip.avi --checkpoint rgb.pt --checkpoint flow.pt --weights 1:1.5 --json
    """
    from tsnpipe.stages.scores.predict import PredictError, check_weights, load_streams, predict_video
    from tsnpipe.stages.train.loop import pick_device

    if not video.is_file():
        raise PredictError(f"There is no video file {video}; give the path of a video such as clip.avi.")
    weights = check_weights(weights, len(checkpoints))
    streams = load_streams(list(checkpoints))
    notes = []
    for stream in streams:
        stream.frames, origin = frames_for(stream.params, fps, size, on_decode_error)
        notes.append(f"{stream.path}: {stream.params.modality}, frames at {describe_frames(stream.frames)} ({origin})")
    torch_device = pick_device(device)
    flow, flow_origin = flow_params_for(streams, "torch" if torch_device.type == "cuda" else "opencv")
    if flow_origin:
        notes.append(f"flow: TV-L1 {flow.backend} on {torch_device.type}, bound {flow.bound:g}, pairs of "
                     f"{'source frames' if flow.pairs == 'source' else 'extracted frames'} ({flow_origin})")
    for note in notes:
        click.echo(f"predict: {note}", err=as_json)
    result = predict_video(video, streams, weights, flow, segments=segments, crops=int(crops), device=str(torch_device),
                           top=top)
    if as_json:
        keys = ("video", "classes", "checkpoints", "weights")
        click.echo(json.dumps({key: result[key] for key in keys}, indent=2))
        return
    timing = result["timings"]
    click.echo(f"predict: {video}: {segments} snippets x {crops} crops, raw scores; weights "
               f"{':'.join(f'{w:g}' for w in weights)}; decode {timing['decode_s']:.1f} s, flow {timing['flow_s']:.1f} s, "
               f"scoring {timing['score_s']:.1f} s")
    click.echo(table(result["classes"]))
