"""extract_video on real ffmpeg: timestamps, sizes, rotation and every kind of bad input."""

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import SAMPLES, TEST_DATA
from tsnpipe.stages.frames import FrameParams, VideoError, extract_video, extract_videos


@pytest.fixture(scope="module")
def ramp(tmp_path_factory, ffmpeg_exe):
    """A lossless 25 fps clip, 2.4 s long, whose frame i has grey level 4*i: pixels tell which frame it is."""
    path = tmp_path_factory.mktemp("ramp") / "ramp.mkv"
    subprocess.run([ffmpeg_exe, "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "color=black:s=64x48:r=25:d=2.4,format=gray,geq=lum=N*4", "-c:v", "ffv1", str(path)], check=True)
    return path


def source_frame_indices(folder, count):
    return [int(round(cv2.imread(str(folder / f"img_{k + 1:05d}.jpg"), 0).mean() / 4)) for k in range(count)]


@pytest.mark.parametrize("fps", [10, 7, 25])
def test_frame_k_is_the_picture_shown_at_k_over_fps(ramp, tmp_path, fps):
    facts = extract_video(ramp, tmp_path / "out", FrameParams(fps=fps, short_side=None))
    assert facts["frames"] == int(np.ceil(2.4 * fps - 1e-9))
    shown = [int(np.floor(k * 25 / fps + 1e-9)) for k in range(facts["frames"])]
    assert source_frame_indices(tmp_path / "out", facts["frames"]) == shown


@pytest.mark.parametrize("params, size", [
    (FrameParams(), (341, 256)),
    (FrameParams(size=(340, 256)), (340, 256)),
    (FrameParams(short_side=128), (171, 128)),
    (FrameParams(short_side=None), (320, 240)),
])
def test_sizes(tmp_path, params, size):
    facts = extract_video(SAMPLES / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", tmp_path / "o", params)
    assert (facts["width"], facts["height"]) == size
    assert cv2.imread(str(tmp_path / "o" / "img_00001.jpg")).shape[:2] == (size[1], size[0])
    assert facts["frames"] == 66 and facts["src_fps"] == 25.0 and facts["duration"] == pytest.approx(6.56)


def test_rotation_metadata_is_honoured(tmp_path):
    facts = extract_video(TEST_DATA / "videos/video_90.mov", tmp_path / "o", FrameParams())
    assert (facts["src_width"], facts["src_height"]) == (568, 320)  # stored landscape
    assert (facts["width"], facts["height"]) == (256, 454)  # shown portrait


def test_audio_is_ignored_and_mkv_decodes(tmp_path):
    facts = extract_video(TEST_DATA / "videos/flipping_a_pancake.mkv", tmp_path / "o", FrameParams())
    assert facts["frames"] == 104 and facts["src_fps"] == 30.0


@pytest.fixture()
def bad_files(tmp_path, ffmpeg_exe):
    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(TEST_DATA / "videos/corrupted.mp4", root / "corrupted.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.avi").write_text("not a video at all\n")
    subprocess.run([ffmpeg_exe, "-loglevel", "error", "-f", "lavfi", "-i", "sine=d=1", str(root / "audio.mkv")],
                   check=True)
    whole = (SAMPLES / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").read_bytes()
    (root / "truncated.avi").write_bytes(whole[: len(whole) // 2])
    (root / "broken.mp4").symlink_to(tmp_path / "nowhere.mp4")
    return root


@pytest.mark.parametrize("name, reason", [
    ("corrupted.mp4", "decode errors"),
    ("empty.mp4", "empty"),
    ("notes.avi", "Invalid data"),
    ("audio.mkv", "no video stream"),
    ("truncated.avi", "truncated"),
    ("broken.mp4", "cannot be read"),
])
def test_bad_input_raises_one_line_reason_naming_the_file(bad_files, tmp_path, name, reason):
    with pytest.raises(VideoError) as info:
        extract_video(bad_files / name, tmp_path / "out" / name, FrameParams())
    message = str(info.value)
    assert reason in message and str(bad_files / name) in message and "\n" not in message


def test_decode_errors_can_be_tolerated(tmp_path):
    facts = extract_video(TEST_DATA / "videos/corrupted.mp4", tmp_path / "o", FrameParams(on_decode_error="keep"))
    assert facts["frames"] > 0


def frames_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


@pytest.mark.parametrize("params", [FrameParams(), FrameParams(size=(340, 256), fps=7)])
def test_many_videos_in_one_ffmpeg_write_the_same_frames_and_facts_as_one_by_one(tmp_path, params):
    videos = sorted(SAMPLES.glob("*/*.avi")) + [TEST_DATA / "videos/video_90.mov"]  # sizes, rates, a rotation
    together = dict(extract_videos([(video, tmp_path / "many" / str(i)) for i, video in enumerate(videos)], params))
    for i, video in enumerate(videos):
        alone = extract_video(video, tmp_path / "one" / str(i), params)
        assert together[i] == alone
        assert frames_bytes(tmp_path / "many" / str(i)) == frames_bytes(tmp_path / "one" / str(i))


def test_a_bad_video_among_many_fails_alone_with_its_own_reason(bad_files, tmp_path):
    good = SAMPLES / "wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi"
    names = ["corrupted.mp4", "empty.mp4", "notes.avi", "audio.mkv", "truncated.avi", "broken.mp4"]
    jobs = [(good, tmp_path / "good0")] + [(bad_files / name, tmp_path / name) for name in names] + [
        (good, tmp_path / "good1")]
    outcomes = dict(extract_videos(jobs, FrameParams()))
    assert outcomes[0]["frames"] == outcomes[len(jobs) - 1]["frames"] == 25
    assert frames_bytes(tmp_path / "good0") == frames_bytes(tmp_path / "good1")
    for index, (name, reason) in enumerate(zip(names, ["decode errors", "empty", "Invalid data", "no video stream",
                                                       "truncated", "cannot be read"]), start=1):
        assert isinstance(outcomes[index], VideoError)
        assert reason in str(outcomes[index]) and str(bad_files / name) in str(outcomes[index])
