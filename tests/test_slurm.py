"""`tsnpipe slurm` on a real single-node Slurm (munged, slurmctld, slurmd started for these tests, see
slurm_cluster.py): job arrays of shards equal a local run byte for byte; a task stopped by SIGUSR2 requeues itself
and loses and redoes nothing; shards killed with SIGKILL and submitted again give the same bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time

import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from slurm_cluster import SlurmCluster, missing_binaries
from tsnpipe.cli import main
from tsnpipe.manifests.shards import Shard, shard_journal_path, shard_journals
from tsnpipe.manifests.table import Manifest, read_journal

needs_slurm = pytest.mark.skipif(bool(missing_binaries()), reason=f"Slurm is not installed ({missing_binaries()})")

FRAMES = ("--fps", "2", "--size", "48x36", "-j", "1")
FLOW = ("--backend", "opencv", "--iterations", "30x3", "-j", "1")  # ~1 s a video: signals land mid-run
SMALL = ("--cpus-per-task", "1", "--mem", "200M", "--gpus", "0")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if missing_binaries():
        pytest.skip(f"Slurm is not installed ({missing_binaries()})")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture()
def slurm_env(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # sbatch, run by `tsnpipe slurm`, finds this cluster
    return cluster


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """The seven bundled clips (shards 2, 1, 0, 1, 0, 2, 2 of 3)."""
    root = tmp_path_factory.mktemp("videos") / "videos"
    shutil.copytree(SAMPLES, root)
    return root


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    """Frames and flow of the clips run here, without Slurm and without shards."""
    work = tmp_path_factory.mktemp("local") / "w"
    for args in (["extract-frames", str(videos), *FRAMES], ["extract-flow", *FLOW]):
        result = CliRunner().invoke(main, [*args, "-w", str(work), "--no-progress"])
        assert result.exit_code == 0, result.output
    return work


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def submit(work, *args) -> str:
    result = CliRunner().invoke(main, ["slurm", "-w", str(work), *SMALL, *args])
    assert result.exit_code == 0, result.output
    return result.output.split("Submitted job array ")[1].split(":")[0]


def wait_for(condition, seconds: float = 90, what: str = "", every: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def finished(cluster, job: str) -> bool:
    states = cluster.array_states(job)
    return bool(states) and all(state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for state in states.values())


def status(work) -> str:
    result = CliRunner().invoke(main, ["status", "-w", str(work)])
    assert result.exit_code == 0, result.output
    return result.output


@needs_slurm
def test_a_three_task_array_of_frames_then_flow_equals_a_local_run(slurm_env, videos, local, tmp_path):
    work = tmp_path / "w"
    frames = submit(work, "--tasks", "3", "extract-frames", str(videos), *FRAMES)
    flow = submit(work, "--tasks", "3", "--after", frames, "extract-flow", *FLOW)
    wait_for(lambda: finished(slurm_env, flow), what="the flow array")
    logs = "".join(p.read_text() for p in sorted((work / "slurm" / "logs").glob("*.out")))
    assert set(slurm_env.array_states(frames).values()) == {"COMPLETED"}, logs
    assert set(slurm_env.array_states(flow).values()) == {"COMPLETED"}, logs
    assert len(shard_journals(work, "frames")) == 3 and len(shard_journals(work, "flow")) == 3
    assert digest(work / "frames") == digest(local / "frames")
    assert digest(work / "flow") == digest(local / "flow")
    report = status(work)  # folds the shards in
    assert "frames           7 up to date; needs work: nothing" in report
    assert "flow             7 up to date; needs work: nothing" in report
    assert shard_journals(work, "frames") == [] == shard_journals(work, "flow")
    for stage in ("frames", "flow"):
        rows, expected = Manifest(work, stage).rows, Manifest(local, stage).rows
        assert rows.keys() == expected.keys() and {row["status"] for row in rows.values()} == {"done"}


def frames_only(local, work):
    """A workdir holding the local run's frames and no flow."""
    shutil.copytree(local / "frames", work / "frames")
    shutil.copytree(local / "manifests", work / "manifests")
    for path in (work / "manifests").glob("flow*"):
        path.unlink()
    return work


@needs_slurm
def test_a_task_stopped_by_sigusr2_requeues_itself_and_redoes_nothing(slurm_env, videos, local, tmp_path):
    work = frames_only(local, tmp_path / "w")
    job = submit(work, "--tasks", "1", "extract-flow", *FLOW)
    journal = shard_journal_path(work, "flow", Shard(0, 1))
    wait_for(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 1, what="the first flow row", every=0.05)
    slurm_env.run("scancel", "--batch", "--signal=USR2", f"{job}_0")
    wait_for(lambda: slurm_env.job(f"{job}_0").get("Restarts") == "1", what="the requeue")
    wait_for(lambda: finished(slurm_env, job), seconds=120, what="the requeued task")
    log = "".join(p.read_text() for p in (work / "slurm" / "logs").glob("*.out"))
    assert slurm_env.job(f"{job}_0")["JobState"] == "COMPLETED", log
    assert "Stopped by SIGUSR2; finished work is kept" in log and "restart 1" in log
    rows, _, torn = read_journal(journal)
    done = [row["video_id"] for row in rows if row["status"] == "done"]
    assert sorted(done) == sorted(Manifest(local, "flow").rows) and not torn  # each video computed exactly once
    second = log.split("restart 1")[1]
    assert " up to date, 0 failed" in second and "\n0 computed" not in second and ", 0 up to date" not in second
    assert "flow             7 up to date; needs work: nothing" in status(work)
    assert digest(work / "flow") == digest(local / "flow")


@needs_slurm
def test_two_shards_killed_at_once_then_submitted_again_give_the_same_bytes(slurm_env, videos, local, tmp_path):
    work = frames_only(local, tmp_path / "w")
    job = submit(work, "--tasks", "2", "extract-flow", *FLOW)
    journals = [shard_journal_path(work, "flow", Shard(k, 2)) for k in range(2)]
    wait_for(lambda: all(path.exists() for path in journals), what="a row from both shards", every=0.05)
    pids = [int((work / "manifests" / f".flow.shard-{k}-of-2.lock").read_text().split()[1]) for k in range(2)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)  # as the OOM killer or a lost node would: no handler runs
        except ProcessLookupError:
            pass  # that shard was done already; the other must not have been (below)
    wait_for(lambda: finished(slurm_env, job), what="the killed tasks")
    sizes = [sum(Shard(k, 2).owns(vid) for vid in Manifest(local, "flow").rows) for k in range(2)]
    assert any(len(read_journal(path)[0]) < size for path, size in zip(journals, sizes)), "done before the kill"
    again = slurm_env.run("sbatch", "--parsable", str(work / "slurm" / "flow-2.sbatch")).stdout.strip()
    wait_for(lambda: finished(slurm_env, again), seconds=120, what="the second submission")
    assert set(slurm_env.array_states(again).values()) == {"COMPLETED"}
    assert digest(work / "flow") == digest(local / "flow")
    assert not list((work / "flow").rglob("*.tmp-*"))
    assert "flow             7 up to date; needs work: nothing" in status(work)


def test_the_script_asks_for_a_stop_signal_requeue_and_the_stage_resources(videos, tmp_path):
    work = tmp_path / "w"
    result = CliRunner().invoke(main, ["slurm", "-w", str(work), "--tasks", "100", "--parallel", "10", "--no-submit",
                                       "--sbatch=--qos=low", "extract-frames", str(videos), "--fps", "5"])
    assert result.exit_code == 0, result.output
    script = (work / "slurm" / "frames-100.sbatch").read_text()
    for line in ("--array=0-99%10", "--cpus-per-task=4", "--mem=8G", "--signal=B:USR2@120", "--requeue", "--qos=low"):
        assert f"#SBATCH {line}\n" in script
    assert "--gres" not in script.replace("--no-progress", "")
    assert f"extract-frames {videos} --fps 5 --jobs 4 -w {work} --no-progress" in script
    assert '--shard "${SLURM_ARRAY_TASK_ID}/100"' in script and "scontrol requeue" in script
    flow = CliRunner().invoke(main, ["slurm", "-w", str(work), "--tasks", "8", "--no-submit", "extract-flow"])
    assert flow.exit_code == 0 and "#SBATCH --gres=gpu:1\n" in (work / "slurm" / "flow-8.sbatch").read_text()


@pytest.mark.parametrize("args, message", [
    (["extract-frames", "VIDEOS", "--fsp", "5"], "No such option '--fsp'"),
    (["extract-frames", "VIDEOS", "--shard", "1/2"], "leave --shard out"),
    (["pack"], "'pack' is not one of"),
])
def test_a_bad_stage_command_is_one_line_at_submission(videos, tmp_path, args, message):
    args = [str(videos) if arg == "VIDEOS" else arg for arg in args]
    result = CliRunner().invoke(main, ["slurm", "-w", str(tmp_path / "w"), "--tasks", "4", "--no-submit", *args])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "w" / "slurm").exists()
