"""`tsnpipe extract-flow` end to end on frames made by the real `tsnpipe extract-frames`."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from conftest import SAMPLES, run_tsnpipe
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest

EYE = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"
WAVE = "wave/RATRACE_wave_f_nm_np1_fr_goo_37"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A workdir with the frames of two real clips at 2 fps and 48x36 (TV-L1 at full settings stays quick)."""
    root = tmp_path_factory.mktemp("flowcli")
    videos = root / "videos"
    for vid in (EYE, WAVE):
        (videos / vid).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / f"{vid}.avi", videos / f"{vid}.avi")
    result = CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(root / "w"), "--fps", "2",
                                       "--size", "48x36", "-j", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "w"


@pytest.fixture()
def workdir(extracted, tmp_path):
    """A private copy of the extracted workdir, so each test starts from frames only."""
    return shutil.copytree(extracted, tmp_path / "w")


def torch_sees_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def flow(workdir, *extra):
    result = CliRunner().invoke(main, ["extract-flow", "-w", str(workdir), "--no-progress", "-j", "1", *extra])
    return result, Manifest(workdir, "flow").rows


def test_every_video_gets_one_flow_pair_per_consecutive_frames(workdir):
    result, rows = flow(workdir)
    assert result.exit_code == 0, result.output
    assert "2 computed, 0 up to date, 0 failed" in result.output
    frames = Manifest(workdir, "frames").rows
    for vid in (EYE, WAVE):
        pairs = frames[vid]["frames"] - 1
        assert rows[vid]["status"] == "done" and rows[vid]["pairs"] == pairs
        assert rows[vid]["output"] == f"flow/{vid}"
        folder = workdir / "flow" / vid
        assert len(list(folder.glob("flow_x_*.jpg"))) == len(list(folder.glob("flow_y_*.jpg"))) == pairs
        assert (folder / f"flow_y_{pairs:05d}.jpg").exists() and not (folder / f"flow_x_{pairs + 1:05d}.jpg").exists()
        assert cv2.imread(str(folder / "flow_x_00001.jpg"), cv2.IMREAD_UNCHANGED).shape == (36, 48)
        assert 0.0 <= rows[vid]["clipped_fraction"] < 0.05


def test_rerun_is_noop(workdir):
    _, first = flow(workdir)
    result, second = flow(workdir)
    assert "0 computed, 2 up to date, 0 failed" in result.output
    assert second == first


@pytest.mark.parametrize("option", [["--bound", "10"], ["--format", "png"], ["--backend", "torch", "--device", "cpu"],
                                    ["--iterations", "60x10"]])
def test_param_change_reruns_every_video(workdir, option):
    flow(workdir, "--backend", "opencv")
    result, rows = flow(workdir, *option)
    assert result.exit_code == 0, result.output
    assert "2 computed, 0 up to date" in result.output
    assert all(row["status"] == "done" for row in rows.values())


@pytest.mark.parametrize("text, expected", [("30x10", (30, 10)), ("300x1", (300, 1)), ("60", (60, 10)),
                                           (" 5 X 2 ", (5, 2)), ("7*3", (7, 3))])
def test_iterations_option_reads_inner_and_outer(text, expected):
    from tsnpipe.cmd_flow import IterationsType

    assert IterationsType().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["0x10", "30x0", "ten", "30x10x2", "-3"])
def test_bad_iterations_are_explained(workdir, text):
    result, _ = flow(workdir, "--iterations", text)
    assert result.exit_code == 2 and "such as 30x10" in result.output and "Traceback" not in result.output


def test_run_prints_the_iterations_it_used(workdir):
    result, rows = flow(workdir, "--iterations", "12x2")
    assert result.exit_code == 0, result.output
    assert "12x2 iterations" in result.output
    default, _ = flow(workdir)
    assert "30x10 iterations" in default.output and "2 computed" in default.output


def test_reextracted_frames_redo_only_that_video(workdir):
    _, first = flow(workdir)
    videos = workdir.parent / "videos"
    (videos / "wave").mkdir(parents=True)
    shutil.copy2(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi", videos / f"{WAVE}.avi")  # new content
    CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(workdir), "--fps", "2",
                              "--size", "48x36", "-j", "1", "--no-progress"])
    result, rows = flow(workdir)
    assert "1 computed, 1 up to date, 0 failed" in result.output
    assert rows[EYE] == first[EYE] and rows[WAVE]["started_at"] >= first[WAVE]["started_at"]
    assert rows[WAVE]["pairs"] == Manifest(workdir, "frames").rows[WAVE]["frames"] - 1


def test_one_frame_video_is_a_done_row_with_zero_pairs(workdir):
    folder = workdir / "frames" / EYE
    for extra in sorted(folder.glob("img_*.jpg"))[1:]:
        extra.unlink()
    result, rows = flow(workdir)
    assert result.exit_code == 0, result.output
    assert rows[EYE]["status"] == "done" and rows[EYE]["pairs"] == 0
    assert list((workdir / "flow" / EYE).iterdir()) == []


def test_missing_frames_fail_the_video_and_name_them(workdir):
    (workdir / "frames" / WAVE / "img_00003.jpg").unlink()
    result, rows = flow(workdir)
    assert result.exit_code == 1
    assert "1 computed, 0 up to date, 1 failed" in result.output
    assert rows[WAVE]["status"] == "failed" and "img_00003.jpg" in rows[WAVE]["error"]
    assert rows[EYE]["status"] == "done"
    assert not (workdir / "flow" / WAVE).exists()


def test_without_frames_the_user_is_told_to_extract_them_first(tmp_path):
    result = CliRunner().invoke(main, ["extract-flow", "-w", str(tmp_path / "empty"), "--no-progress"])
    assert result.exit_code == 1
    assert "tsnpipe extract-frames" in result.output and "Traceback" not in result.output


def test_real_subprocess_in_two_processes(workdir):
    done = run_tsnpipe("extract-flow", "-w", str(workdir), "-j", "2")
    assert done.returncode == 0, done.stderr
    assert "extract-flow: 2 videos" in done.stdout and "2 computed, 0 up to date, 0 failed" in done.stdout
    assert "\r" not in done.stderr and "Traceback" not in done.stderr  # a log gets whole lines, never bar redraws
    assert Manifest(workdir, "flow").rows[EYE]["pairs"] == Manifest(workdir, "frames").rows[EYE]["frames"] - 1


def test_torch_backend_batches_across_videos_like_one_video_at_a_time(workdir, tmp_path):
    """With one job the torch backend draws pairs from several videos at once; the images match a run that
    flows each video in its own process, and a broken video still fails alone."""
    separate = shutil.copytree(workdir, tmp_path / "separate")
    (workdir / "frames" / WAVE / "img_00002.jpg").unlink()
    batched, rows = flow(workdir, "--backend", "torch", "--device", "cpu", "--batch", "8")
    assert batched.exit_code == 1 and "1 computed, 0 up to date, 1 failed" in batched.output
    assert rows[WAVE]["status"] == "failed" and "img_00002.jpg" in rows[WAVE]["error"]
    result = CliRunner().invoke(main, ["extract-flow", "-w", str(separate), "--no-progress", "-j", "2",
                                       "--backend", "torch", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for path in sorted((separate / "flow" / EYE).glob("*.jpg")):
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(workdir / "flow" / EYE / path.name), cv2.IMREAD_UNCHANGED).astype(int)
        assert (abs(a - b) <= 1).mean() >= 0.99


@pytest.mark.parametrize("text, expected", [("0", (0,)), ("0,2", (0, 2)), (" 1 , 3 ", (1, 3))])
def test_devices_option_reads_gpu_numbers(text, expected):
    from tsnpipe.cmd_flow import DevicesType

    assert DevicesType().convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["gpu0", "0,0", "1,", "-1"])
def test_bad_devices_are_explained(workdir, text):
    result, _ = flow(workdir, "--backend", "torch", "--devices", text)
    assert result.exit_code == 2 and "such as 0,2" in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch_sees_gpu(), reason="checks the message of a machine without a GPU")
def test_devices_without_a_gpu_are_refused_with_a_fix(workdir):
    result, rows = flow(workdir, "--backend", "torch", "--device", "cuda", "--devices", "0,2")
    assert result.exit_code == 1 and "no CUDA GPU" in result.output and "--device cpu" in result.output
    assert "Traceback" not in result.output
    result, _ = flow(workdir, "--backend", "torch", "--device", "cpu", "--devices", "1")
    assert result.exit_code == 1 and "--devices picks GPUs" in result.output


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_dask_workers_with_a_gpu_resource_run_the_torch_backend(workdir, backend):
    """Each video is a task asking for GPU=1; a local cluster on the CPU whose worker declares one runs them.
    `auto` means the torch backend there, as on a machine with a GPU, though this machine has none."""
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Restrictions(SchedulerPlugin):
        def __init__(self, scheduler):
            self.scheduler, self.seen = scheduler, []

        def transition(self, key, start, finish, *args, **kwargs):
            task = self.scheduler.tasks.get(key)
            if finish == "processing" and task is not None:
                self.seen.append(task.resource_restrictions)

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      resources={"GPU": 1}) as cluster:
        plugin = Restrictions(cluster.scheduler)
        cluster.scheduler.add_plugin(plugin)
        result, rows = flow(workdir, "--backend", backend, "--executor", "dask", "--scheduler",
                            cluster.scheduler_address, "--iterations", "10x2")
    assert result.exit_code == 0, result.output
    assert "on workers with a GPU resource" in result.output and "2 computed" in result.output
    assert "TV-L1 (torch on auto" in result.output
    assert all(row["status"] == "done" and row["pairs"] > 0 for row in rows.values())
    assert sum(restriction == {"GPU": 1} for restriction in plugin.seen) >= 2, plugin.seen


def test_a_dask_cluster_without_gpu_workers_runs_auto_on_opencv_and_refuses_torch(workdir):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        refused, rows = flow(workdir, "--backend", "torch", "--executor", "dask", "--scheduler", address)
        assert refused.exit_code == 1 and "Traceback" not in refused.output and not rows
        assert "declares a GPU resource" in refused.output and "--resources GPU=1" in refused.output
        result, rows = flow(workdir, "--executor", "dask", "--scheduler", address, "--iterations", "10x2")
    assert result.exit_code == 0, result.output
    assert "TV-L1 (opencv)" in result.output and "2 computed" in result.output


@pytest.mark.parametrize("command", ["extract-flow", "extract-frames"])
def test_a_dask_scheduler_that_does_not_answer_is_one_sentence(workdir, monkeypatch, command):
    from tsnpipe import options

    monkeypatch.setattr(options, "DASK_CONNECT_S", 1.0)
    videos = Path(Manifest(workdir, "frames").rows[EYE]["source"]).parents[1]
    first = [command, str(videos)] if command == "extract-frames" else [command]
    executor = "--backend" if command == "extract-frames" else "--executor"
    result = CliRunner().invoke(main, [*first, "-w", str(workdir), "--no-progress", executor, "dask",
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "Cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output.splitlines()[-1]


def test_auto_on_the_cpu_times_both_backends_then_keeps_its_choice(workdir):
    if torch_sees_gpu():
        pytest.skip("auto means the torch backend on a GPU")
    result, rows = flow(workdir, "-j", "2")
    assert result.exit_code == 0, result.output
    chosen = "torch" if "--backend auto: torch, the faster on 2 pairs of " in result.output else "opencv"
    assert f"--backend auto: {chosen}, the faster on 2 pairs of " in result.output
    assert "opencv " in result.output and " s a pair, torch " in result.output
    assert f"TV-L1 ({chosen}" in result.output and "2 computed" in result.output
    rerun, again = flow(workdir, "-j", "2")  # whatever the load now, the rerun keeps the backend and does nothing
    assert f"--backend auto: {chosen}, which this workdir's flow was computed with" in rerun.output
    assert "0 computed, 2 up to date" in rerun.output and again == rows
