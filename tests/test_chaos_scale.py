"""What keeps a workdir of 240,000 videos quick and safe, held on tiny real data: no-op runs write nothing,
touched videos are hashed in parallel and recorded in one write, temps are found without walking the outputs
(and still swept after a kill), status reads each manifest once and works from any folder, the HDF5 index
grows by appending, and a full disk stops the run at the first video with one sentence."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from chaos import (FRAMES, assert_clean_process, clean_run, extracted, file_size_limit, invoke,  # noqa: F401
                   tree)
from conftest import SAMPLES, run_tsnpipe, tsnpipe_cmd
from tsnpipe.manifests.table import Manifest, journal_path, manifest_path


def test_status_from_another_folder_sees_the_new_video(clips, tmp_path):
    """The video folder was given relative to where extract-frames ran; status runs elsewhere."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    shutil.move(clips, here / "videos")
    assert_clean_process(run_tsnpipe("extract-frames", "videos", "-w", "w", *FRAMES, cwd=here), 0)
    new = here / "videos" / "wave" / "v_new.avi"
    shutil.copy2(SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", new)
    status = run_tsnpipe("status", "-w", str(here / "w"), cwd=elsewhere)
    assert_clean_process(status, 0)
    assert "frames           3 up to date; needs work: 1 new" in status.stdout, status.stdout


def test_full_disk_stops_the_run_at_the_first_video_with_one_sentence(clips, tmp_path, clean_run):
    """ffmpeg's first frame does not fit (a file size limit fails the write as a full disk would): the run
    stops there, no video becomes a failed row, and the rerun extracts them all."""
    workdir = tmp_path / "w"
    args = ("extract-frames", str(clips), "-w", str(workdir), "--fps", "1", "--size", "256", "-j", "1",
            "--no-progress")
    proc = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, preexec_fn=file_size_limit(4096))
    assert_clean_process(proc, 1)
    assert "failed:" not in proc.stdout + proc.stderr and " failed" not in proc.stdout
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"Error: The disk holding {workdir / 'frames'} is full (")
    assert "File too large" in proc.stderr and "free some space and run the command again" in proc.stderr
    assert not [row for row in Manifest(workdir, "frames").rows.values() if row["status"] == "failed"]
    rerun = run_tsnpipe(*args[:-1], "--no-progress")
    assert_clean_process(rerun, 0)
    assert "3 extracted, 0 up to date, 0 failed" in rerun.stdout


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_full_disk_while_writing_flow_images_stops_the_run_with_one_sentence(clips, tmp_path, backend):
    """The first flow image does not fit: the run stops with the full-disk sentence, no video is a failed row
    (OpenCV's imwrite said only "could not write", so each video became a failed row), the rerun does all."""
    workdir = tmp_path / "w"
    frames = invoke("extract-frames", str(clips), "-w", str(workdir), "--fps", "1", "--size", "128", *FRAMES[4:])
    assert frames.exit_code == 0, frames.output
    args = ("extract-flow", "-w", str(workdir), "--backend", backend, "--device", "cpu", "--iterations", "5x2",
            "-j", "1", "--no-progress")
    proc = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, preexec_fn=file_size_limit(1024))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith(f"Error: The disk holding {workdir / 'flow'} is full (File too large"), proc.stderr
    assert proc.stderr.count("\n") == 1 and "failed:" not in proc.stdout + proc.stderr
    assert not [row for row in Manifest(workdir, "flow").rows.values() if row["status"] == "failed"]
    rerun = run_tsnpipe(*args)
    assert_clean_process(rerun, 0)
    assert "3 computed, 0 up to date, 0 failed" in rerun.stdout


def test_noop_run_writes_no_table(extracted, clips):
    table = manifest_path(extracted, "frames")
    before = table.stat()
    assert "0 extracted, 3 up to date" in invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES).output
    after = table.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not journal_path(extracted, "frames").exists()


def test_touched_videos_are_hashed_on_threads_and_recorded_with_one_fsync(extracted, clips, monkeypatch):
    from tsnpipe import runner

    for video in clips.rglob("*.avi"):
        os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))
    real_hash, real_fsync, threads, synced = runner.content_hash, os.fsync, [], []
    monkeypatch.setattr(runner, "content_hash", lambda path: threads.append(threading.current_thread()) or
                        real_hash(path))
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    result = invoke("extract-frames", str(clips), "-w", str(extracted), "--fps", "1", "--size", "32", "-j", "2",
                    "--no-progress")
    assert "0 extracted, 3 up to date" in result.output, result.output
    assert len(threads) == 3 and threading.main_thread() not in threads
    assert [path for path in synced if path.endswith(".journal.jsonl")] == [str(journal_path(extracted, "frames"))]
    monkeypatch.undo()
    assert all(row.get("seen") for row in Manifest(extracted, "frames").rows.values())


def test_status_reads_each_manifest_once(extracted, monkeypatch):
    from tsnpipe.manifests import table

    assert invoke("extract-flow", "-w", str(extracted), "--backend", "opencv", "-j", "1", "--iterations", "2x1",
                  "--no-progress").exit_code == 0
    for fmt in ("lmdb", "hdf5"):
        assert invoke("pack", "-w", str(extracted), "--format", fmt, "--no-progress").exit_code == 0
    assert invoke("build-splits", "-w", str(extracted), "--folders", "--group-scope", "all", "--group-regex", "^(.)").exit_code == 0
    real_init, loads = table.Manifest.__init__, []

    def counted(self, workdir, stage):
        loads.append(stage)
        real_init(self, workdir, stage)

    monkeypatch.setattr(table.Manifest, "__init__", counted)
    status = invoke("status", "-w", str(extracted))
    assert status.exit_code == 0, status.output
    assert "splits/folders/split1" in status.output
    assert sorted(loads) == ["flow", "frames", "pack-hdf5", "pack-lmdb"]


# ---- the HDF5 index grows by appending --------------------------------------------------------------------

def videos_of(count: int, frame: bytes, per_video: int):
    from tsnpipe.stages.store.pack import VideoImages, checksum

    for n in range(count):
        images = {"rgb": [frame] * per_video, "flow_x": [], "flow_y": []}
        yield VideoImages(f"class/v{n:03d}", images, checksum(images))


def test_hdf5_index_is_appended_at_each_shard_commit_and_written_whole_once(tmp_path, extracted, monkeypatch):
    """24 videos in 1 MB shards are 12 commits; the index is written whole once, and every byte the log
    holds is a commit's own entries."""
    from tsnpipe.stages.store import hdf5_writer
    from tsnpipe.stages.store.reader import open_reader

    frame = (extracted / "frames").rglob("img_00001.jpg").__next__().read_bytes()
    per_video = (600 << 10) // len(frame) + 1  # two videos fill a 1 MB shard
    whole, appended = [], []
    real_write, real_append = hdf5_writer._write_index, hdf5_writer._append_log
    monkeypatch.setattr(hdf5_writer, "_write_index", lambda path, index: whole.append(len(index["videos"])) or
                        real_write(path, index))
    monkeypatch.setattr(hdf5_writer, "_append_log", lambda path, record: appended.append(record) or
                        real_append(path, record))
    store = tmp_path / "s.hdf5"
    done = list(hdf5_writer.write_videos(store, videos_of(24, frame, per_video), 1 << 20))
    assert len(done) == 24 and len({name for _, name in done}) == 12
    assert whole == [0, 24]  # the empty index that marks the folder, then the one fold at the end
    commits = [record for record in appended if "commit" in record]
    assert len(commits) == 12 and all(len(record["videos"]) == 2 for record in commits)
    assert sorted(p.name for p in store.iterdir()) == ["index.json", *[f"shard-{n:05d}.h5" for n in range(1, 13)]]
    reader = open_reader(store)
    assert len(reader.video_ids()) == 24
    assert reader.frames("class/v023", range(per_video), decode=False) == [frame] * per_video


def test_a_killed_pack_leaves_a_log_the_reader_trusts_up_to_its_torn_line(tmp_path, extracted, monkeypatch):
    """Killed after three commits, with half a line appended: readers see the three shards' videos, the
    rerun folds the log and packs the rest."""
    from tsnpipe.stages.store import hdf5_writer
    from tsnpipe.stages.store.reader import HDF5_INDEX_LOG, open_reader

    frame = (extracted / "frames").rglob("img_00001.jpg").__next__().read_bytes()
    per_video = (600 << 10) // len(frame) + 1
    store = tmp_path / "s.hdf5"
    writer = hdf5_writer.write_videos(store, videos_of(12, frame, per_video), 1 << 20)
    assert len([next(writer) for _ in range(6)]) == 6
    writer.close()  # as a kill would leave it: no fold at the end
    with open(store / HDF5_INDEX_LOG, "ab") as handle:
        handle.write(b'0badc0de {"commit": "shard-00004.h5", "vid')
    assert len(open_reader(store).video_ids()) == 6
    done = list(hdf5_writer.write_videos(store, list(videos_of(12, frame, per_video))[6:], 1 << 20))
    assert len(done) == 6
    assert not (store / HDF5_INDEX_LOG).exists()
    assert len(open_reader(store).video_ids()) == 12


# ---- temps: found in the output folders' listings, swept after a kill ------------------------------------

def test_temps_left_by_a_killed_run_are_swept_without_walking_the_outputs(clips, tmp_path, clean_run, monkeypatch):
    workdir = tmp_path / "w"
    proc = subprocess.Popen(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), *FRAMES),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, temps = time.time() + 60, []
    while time.time() < deadline and not temps:
        temps = [p for p in (workdir / "frames").glob("*/*") if ".tmp-" in p.name] if (workdir / "frames").is_dir() \
            else []
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert temps, "the run finished before a temp folder was seen"
    walked = []
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: walked.append(self) or real_rglob(self, pattern))
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    assert not [p for p in walked if p.is_relative_to(workdir)]
    monkeypatch.undo()
    assert not [p for p in workdir.rglob("*") if ".tmp-" in p.name]
    assert tree(workdir, "frames") == clean_run
