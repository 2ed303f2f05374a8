"""The flow stage on tiny real frames: file names, facts, quantization and the errors a user meets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.driver import flow_video, flow_videos
from tsnpipe.stages.flow.images import dequantize, quantize

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos"
CLIP = SAMPLES / "SoccerJuggling" / "v_SoccerJuggling_g23_c01.avi"
BACKENDS = ["opencv", "torch"]
# Few iterations keep these behaviour tests fast; accuracy is tested with the defaults elsewhere.
QUICK = dict(nscales=2, warps=1, inner_iterations=20, outer_iterations=1)


def write_frames(folder: Path, count: int, size=(64, 48), start: int = 0) -> Path:
    """img_00001.jpg .. from consecutive frames of a real clip, resized small."""
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(CLIP))
    for _ in range(start):
        capture.read()
    for k in range(count):
        ok, frame = capture.read()
        assert ok, "the sample clip is shorter than the test expects"
        cv2.imwrite(str(folder / f"img_{k + 1:05d}.jpg"), cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    capture.release()
    return folder


@pytest.mark.parametrize(
    "value, bound, expected",
    [
        (-20.0, 20, 0),
        (-25.0, 20, 0),
        (0.0, 20, 128),  # 127.5 rounds up: decoding subtracts 128
        (20.0, 20, 255),
        (33.0, 20, 255),
        (1.0, 20, 134),  # 255 * 21 / 40 = 133.875
        (-1.0, 20, 121),  # 255 * 19 / 40 = 121.125
        (10.0, 10, 255),
        (-5.0, 10, 64),  # 255 * 5 / 20 = 63.75
    ],
)
def test_quantization_table(value, bound, expected):
    assert quantize(np.array([value], np.float32), bound)[0] == expected


def test_dequantize_inverts_quantize_within_half_a_step():
    values = np.linspace(-20, 20, 1001, dtype=np.float32)
    back = dequantize(quantize(values, 20), 20)
    assert np.abs(back - values).max() <= 20 / 255 + 1e-5
    assert dequantize(np.array([0, 255], np.uint8), 20).tolist() == [-20.0, 20.0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_n_frames_give_n_minus_one_pairs_named_from_one(tmp_path, backend):
    frames = write_frames(tmp_path / "frames" / "v", 4)
    facts = flow_video(frames, tmp_path / "flow", FlowParams(backend=backend, **QUICK), device="cpu")
    names = sorted(p.name for p in (tmp_path / "flow").iterdir())
    assert facts["pairs"] == 3
    assert 0.0 <= facts["clipped_fraction"] <= 1.0
    assert names == [f"flow_{c}_{k:05d}.jpg" for c in "xy" for k in (1, 2, 3)]
    image = cv2.imread(str(tmp_path / "flow" / "flow_x_00001.jpg"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (48, 64) and image.dtype == np.uint8


def test_png_option_writes_lossless_pngs(tmp_path):
    frames = write_frames(tmp_path / "frames", 2)
    flow_video(frames, tmp_path / "flow", FlowParams(image_format="png", **QUICK))
    assert sorted(p.name for p in (tmp_path / "flow").iterdir()) == ["flow_x_00001.png", "flow_y_00001.png"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_video_gives_zero_pairs(tmp_path, backend):
    frames = write_frames(tmp_path / "frames", 1)
    facts = flow_video(frames, tmp_path / "flow", FlowParams(backend=backend), device="cpu")
    assert facts == {"pairs": 0, "clipped_fraction": 0.0}
    assert list((tmp_path / "flow").iterdir()) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_frame_is_named(tmp_path, backend):
    frames = write_frames(tmp_path / "frames", 5)
    (frames / "img_00003.jpg").unlink()
    with pytest.raises(TsnpipeError, match=r"img_00003\.jpg"):
        flow_video(frames, tmp_path / "flow", FlowParams(backend=backend, **QUICK), device="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_undecodable_frame_is_named(tmp_path, backend):
    frames = write_frames(tmp_path / "frames", 3)
    (frames / "img_00002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(TsnpipeError, match=r"img_00002\.jpg"):
        flow_video(frames, tmp_path / "flow", FlowParams(backend=backend, **QUICK), device="cpu")


def test_strong_motion_is_clipped_and_counted(tmp_path):
    """A frame shifted by 6 px with a bound of 2 px: most values are clipped, and the facts say so."""
    folder = tmp_path / "frames"
    folder.mkdir()
    capture = cv2.VideoCapture(str(CLIP))
    ok, frame = capture.read()
    frame = cv2.resize(frame, (96, 72), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(folder / "img_00001.jpg"), frame[8:-8, 8:-8])
    cv2.imwrite(str(folder / "img_00002.jpg"), frame[8:-8, 2:-14])  # content moves 6 px right
    facts = flow_video(folder, tmp_path / "flow", FlowParams(backend="torch", bound=2.0))
    assert facts["pairs"] == 1
    assert 0.3 < facts["clipped_fraction"] <= 0.5  # x clipped almost everywhere, y hardly ever
    x = cv2.imread(str(tmp_path / "flow" / "flow_x_00001.jpg"), cv2.IMREAD_GRAYSCALE)
    assert np.median(x) >= 250


def test_flow_videos_batches_across_videos_and_reports_each(tmp_path):
    good_a = write_frames(tmp_path / "frames" / "a", 3)
    good_b = write_frames(tmp_path / "frames" / "b", 4, size=(80, 60), start=10)  # another size: its own batches
    single = write_frames(tmp_path / "frames" / "c", 1)
    broken = write_frames(tmp_path / "frames" / "d", 3)
    (broken / "img_00001.jpg").unlink()
    jobs = [(good_a, tmp_path / "flow" / "a"), (broken, tmp_path / "flow" / "d"),
            (single, tmp_path / "flow" / "c"), (good_b, tmp_path / "flow" / "b")]
    params = FlowParams(backend="torch", **QUICK)
    results = dict(flow_videos(jobs, params, device="cpu", batch=3))
    assert sorted(results) == [0, 1, 2, 3]
    assert results[0]["pairs"] == 2 and results[3]["pairs"] == 3 and results[2]["pairs"] == 0
    assert isinstance(results[1], TsnpipeError) and "img_00001.jpg" in str(results[1])
    # Batched across videos, each video's images equal those of that video flowed alone.
    flow_video(good_b, tmp_path / "alone", params, device="cpu", batch=1)
    for k in (1, 2, 3):
        together = cv2.imread(str(tmp_path / "flow" / "b" / f"flow_y_{k:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
        alone = cv2.imread(str(tmp_path / "alone" / f"flow_y_{k:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
        assert together.shape == (60, 80) and np.abs(together.astype(int) - alone).max() <= 1


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (dict(backend="gpu"), "backend"),
        (dict(image_format="webp"), "format"),
        (dict(bound=0), "bound"),
        (dict(median_filtering=7), "medianFiltering"),
        (dict(jpeg_quality=101), "JPEG quality"),
    ],
)
def test_bad_params_are_explained(changes, fragment):
    with pytest.raises(TsnpipeError, match=fragment):
        FlowParams(**changes)


def test_absent_gpu_is_refused_with_a_fix(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    frames = write_frames(tmp_path / "frames", 2)
    with pytest.raises(TsnpipeError, match="--device cpu"):
        flow_video(frames, tmp_path / "flow", FlowParams(backend="torch"), device="cuda")


@pytest.mark.parametrize("seconds, chosen", [({"opencv": 1.0, "torch": 0.8}, "torch"),
                                             ({"opencv": 0.8, "torch": 1.0}, "opencv"),
                                             ({"opencv": 1.0, "torch": 1.0}, "opencv")])
def test_the_faster_backend_is_chosen(seconds, chosen):
    from tsnpipe.stages.flow.pick import faster_backend

    assert faster_backend(seconds) == chosen


def test_both_backends_are_timed_on_real_pairs_and_threads_restored(tmp_path):
    import torch

    from tsnpipe.stages.flow.pick import time_backends

    rng = np.random.default_rng(0)
    first = cv2.GaussianBlur(rng.integers(0, 255, (36, 48), dtype=np.uint8), (5, 5), 0)
    pairs = [(first, np.roll(first, 1, axis=1))] * 2
    before = cv2.getNumThreads(), torch.get_num_threads()
    seconds = time_backends(pairs, FlowParams(inner_iterations=5, outer_iterations=2), threads=1)
    assert set(seconds) == {"opencv", "torch"} and all(value > 0 for value in seconds.values())
    assert (cv2.getNumThreads(), torch.get_num_threads()) == before
