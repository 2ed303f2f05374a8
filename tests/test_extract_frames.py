"""`tsnpipe extract-frames` end to end: incremental reruns, crash safety, bad input, locking, Dask."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from click.testing import CliRunner

from conftest import SAMPLES, run_tsnpipe, tsnpipe_cmd
from tsnpipe.cli import main
from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.manifests.table import Manifest


def extract(videos, workdir, *extra):
    result = CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(workdir), "--no-progress",
                                       "-j", "1", *extra])
    return result, Manifest(workdir, "frames").rows


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jpg"))}


def test_frame_counts_at_10_fps_and_at_another_rate(clips, tmp_path):
    result, rows = extract(clips, tmp_path / "w")
    assert result.exit_code == 0, result.output
    assert "3 extracted, 0 up to date, 0 failed" in result.output
    assert rows["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"]["frames"] == 66  # 6.56 s at 10 fps
    folder = tmp_path / "w" / "frames" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01"
    assert len(list(folder.glob("img_*.jpg"))) == 66 and (folder / "img_00066.jpg").exists()
    _, rows = extract(clips, tmp_path / "w5", "--fps", "5")
    assert rows["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"]["frames"] == 33


def test_rerun_is_noop(clips, tmp_path):
    _, first = extract(clips, tmp_path / "w")
    result, second = extract(clips, tmp_path / "w")
    assert "0 extracted, 3 up to date, 0 failed" in result.output
    assert second == first


def test_touched_but_identical_video_is_not_redone(clips, tmp_path):
    _, first = extract(clips, tmp_path / "w")
    video = clips / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi"
    os.utime(video, ns=(time.time_ns(), time.time_ns()))
    result, _ = extract(clips, tmp_path / "w")
    assert "0 extracted, 3 up to date" in result.output


def test_adding_one_video_processes_only_it(clips, tmp_path):
    _, first = extract(clips, tmp_path / "w")
    shutil.copy(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi", clips / "wave")
    result, rows = extract(clips, tmp_path / "w")
    assert "1 extracted, 3 up to date, 0 failed" in result.output
    assert all(rows[v] == first[v] for v in first)


@pytest.mark.parametrize("option", [["--fps", "5"], ["--size", "340x256"], ["--quality", "5"]])
def test_param_change_reruns_every_video(clips, tmp_path, option):
    extract(clips, tmp_path / "w")
    result, rows = extract(clips, tmp_path / "w", *option)
    assert "3 extracted, 0 up to date" in result.output


def test_changed_content_and_missing_output_are_redone_and_reported(clips, tmp_path):
    workdir = tmp_path / "w"
    extract(clips, workdir)
    shutil.copy(SAMPLES / "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi", clips / "wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi")
    shutil.rmtree(workdir / "frames" / "ApplyEyeMakeup")
    status = CliRunner().invoke(main, ["status", "-w", str(workdir), "--json"])
    assert json.loads(status.output)["frames"] | {} == {
        "up to date": 1, "new": 0, "params changed": 0, "input changed": 1, "failed before": 0,
        "output missing": 1}
    result, rows = extract(clips, workdir)
    assert "2 extracted, 1 up to date" in result.output
    assert rows["wave/RATRACE_wave_f_nm_np1_fr_goo_37"]["frames"] == 17  # now TrumanShow's 1.63 s


def test_bad_input_fails_its_row_and_the_rest_goes_on(clips, tmp_path):
    (clips / "junk").mkdir()
    (clips / "junk" / "empty.mp4").write_bytes(b"")
    (clips / "junk" / "notes.avi").write_text("hello")
    result, rows = extract(clips, tmp_path / "w")
    assert result.exit_code == 1
    assert "3 extracted, 0 up to date, 2 failed (see " in result.output
    assert rows["junk/empty"]["status"] == "failed" and "empty" in rows["junk/empty"]["error"]
    assert "Invalid data" in rows["junk/notes"]["error"]
    assert not (tmp_path / "w" / "frames" / "junk" / "empty").exists()
    result, _ = extract(clips, tmp_path / "w")  # failed rows are retried, done rows are not
    assert "0 extracted, 3 up to date, 2 failed" in result.output


def test_second_concurrent_run_is_refused(clips, tmp_path):
    workdir = tmp_path / "w"
    with WorkdirLock(workdir, "tsnpipe extract-frames"):
        proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir))
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "in use by pid" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["extract-frames", "/no/such/folder", "-w", "x"], "does not exist"),
    (["extract-frames", ".", "-w", "x", "--size", "big"], "is not a size"),
    (["extract-frames", ".", "-w", "x", "--fps", "0"], "--fps"),
    (["extract-frames", ".", "-w", "x", "--backend", "dask"], "needs --scheduler"),
])
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    proc = run_tsnpipe(*args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_kill_mid_run_then_rerun_matches_uninterrupted_and_redoes_nothing_finished(tmp_path):
    videos = tmp_path / "videos"
    for i in range(8):  # eight copies of a real clip, so the kill lands part-way
        (videos / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / "SoccerJuggling/v_SoccerJuggling_g24_c01.avi", videos / f"c{i % 2}" / f"v{i}.avi")
    workdir = tmp_path / "killed"
    proc = subprocess.Popen(tsnpipe_cmd("extract-frames", str(videos), "-w", str(workdir), "-j", "1",
                                        "--no-progress"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = workdir / "manifests" / "frames.journal.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.read_text().count("\n") < 2):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = Manifest(workdir, "frames").rows
    assert 2 <= len(finished) < 8, "the kill should land part-way"
    result, rows = extract(videos, workdir)
    assert f"{8 - len(finished)} extracted, {len(finished)} up to date, 0 failed" in result.output
    assert all(rows[v]["started_at"] == finished[v]["started_at"] for v in finished)
    extract(videos, tmp_path / "clean")
    assert tree_digest(workdir / "frames") == tree_digest(tmp_path / "clean" / "frames")


def test_dask_backend_gives_the_same_manifest_as_local(clips, tmp_path):
    from distributed import LocalCluster

    volatile = ("started_at", "seconds")
    _, local = extract(clips, tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result, dask_rows = extract(clips, tmp_path / "dask", "--backend", "dask", "--scheduler",
                                    cluster.scheduler_address, "-j", "2")
    assert result.exit_code == 0, result.output

    def comparable(rows):
        return {v: {k: x for k, x in r.items() if k not in volatile} for v, r in rows.items()}

    assert comparable(dask_rows) == comparable(local)
    assert tree_digest(tmp_path / "dask" / "frames") == tree_digest(tmp_path / "local" / "frames")


def test_two_jobs_with_several_videos_a_task_match_one_job_bit_for_bit(tmp_path):
    videos = tmp_path / "videos"
    for i, clip in enumerate(sorted(SAMPLES.glob("*/*.avi")) * 3):  # 21 videos: tasks of several videos each
        (videos / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, videos / clip.parent.name / f"{clip.stem}_{i}.avi")
    (videos / "wave" / "notes.avi").write_text("not a video")
    serial, serial_rows = extract(videos, tmp_path / "serial")
    result, rows = extract(videos, tmp_path / "parallel", "-j", "2")
    assert result.exit_code == 1 and "21 extracted, 0 up to date, 1 failed" in result.output
    assert "(2 jobs x " in result.output  # the thread budget in the summary line
    assert "Invalid data" in rows["wave/notes"]["error"]
    volatile = ("started_at", "seconds")
    assert ({v: {k: x for k, x in r.items() if k not in volatile} for v, r in rows.items()}
            == {v: {k: x for k, x in r.items() if k not in volatile} for v, r in serial_rows.items()})
    assert tree_digest(tmp_path / "parallel" / "frames") == tree_digest(tmp_path / "serial" / "frames")
