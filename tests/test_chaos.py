"""Kills, full disks, torn and garbled records: every bad state ends in one sentence and exit code 1, a
rerun finishes the work byte-identical to an uninterrupted run, and nothing outside tsnpipe's files moves."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from chaos import (FRAMES, assert_clean_process, assert_one_line_error, clean_run, extracted,  # noqa: F401
                   file_size_limit, full_disk_at_every_fsync, invoke, tree)
from conftest import run_tsnpipe, tsnpipe_cmd
from tsnpipe.manifests.table import Manifest, journal_path, manifest_path


# ---- the journal: torn tails, garbage, damaged tables -------------------------------------------------

def test_torn_tail_is_cut_before_the_next_row_is_appended(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    manifest.record({"video_id": "a", "status": "done"})
    with open(manifest.journal, "ab") as fh:
        fh.write(b'0badc0de {"video_id": "b", "sta')  # a kill or a full disk mid-write
    Manifest(tmp_path, "frames").record({"video_id": "c", "status": "done"})
    with open(manifest.journal, "ab") as fh:
        fh.write(b'{"video_id": "d"')  # interrupted once more
    Manifest(tmp_path, "frames").record({"video_id": "e", "status": "done"})
    assert sorted(Manifest(tmp_path, "frames").rows) == ["a", "c", "e"]


def test_garbled_journal_line_is_set_aside_with_a_warning(tmp_path, capsys):
    manifest = Manifest(tmp_path, "frames")
    for vid in "abc":
        manifest.record({"video_id": vid, "status": "done"})
    data = bytearray(manifest.journal.read_bytes())
    second = data.index(b"\n") + 12
    data[second] ^= 0x01  # one flipped bit inside row b, still valid JSON
    manifest.journal.write_bytes(bytes(data) + b"\xff\xfejunk\n")
    reread = Manifest(tmp_path, "frames")
    assert sorted(reread.rows) == ["a", "c"]
    assert "damaged line(s) (2, 4)" in capsys.readouterr().err
    reread.record({"video_id": "d", "status": "done"})
    aside = list(manifest.journal.parent.glob("frames.journal.jsonl.damaged-*"))
    assert len(aside) == 1 and b"junk" in aside[0].read_bytes()
    assert sorted(Manifest(tmp_path, "frames").rows) == ["a", "c", "d"]


def test_rows_without_checksum_from_older_versions_still_load(tmp_path):
    path = journal_path(tmp_path, "frames")
    path.parent.mkdir(parents=True)
    path.write_text('{"video_id": "a", "status": "done"}\n')
    assert Manifest(tmp_path, "frames").rows["a"]["status"] == "done"


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_damaged_table_is_one_sentence_for_every_command(clips, tmp_path, damage):
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    table = manifest_path(workdir, "frames")
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:200] + b"\x00" * 64 + data[264:])
    for args in (["extract-frames", str(clips)], ["pack", "--format", "hdf5"], ["build-splits", "--folders"]):
        result = invoke(*args, "-w", str(workdir))
        assert_one_line_error(result, str(table), "status --repair")


def test_junk_appended_to_the_journal_is_a_warning_and_the_run_goes_on(clips, tmp_path, clean_run):
    workdir = tmp_path / "w"
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    journal = journal_path(workdir, "frames")
    journal.write_bytes(b"\x89PNG garbage that is not utf-8 \xff\n")
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(proc, 0)
    assert "warning:" in proc.stderr and "damaged" in proc.stderr
    assert "3 up to date" in proc.stdout
    assert tree(workdir, "frames") == clean_run


# ---- a full disk at any write, a lock that cannot be taken -------------------------------------------

def test_full_disk_at_every_fsync_is_one_sentence_and_the_rerun_completes(clips, tmp_path, clean_run, monkeypatch):
    workdir = tmp_path / "w"
    failed = full_disk_at_every_fsync(monkeypatch, "extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert failed >= 3  # run info, journal rows and the table all were hit
    assert invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES).exit_code == 0
    assert tree(workdir, "frames") == clean_run
    assert not [p for p in (workdir / "manifests").iterdir() if ".tmp-" in p.name]


def test_full_disk_while_taking_the_lock_is_one_sentence(clips, tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.run(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), *FRAMES),
                          capture_output=True, text=True, preexec_fn=file_size_limit(0))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith(f"Error: Cannot write {workdir / '.tsnpipe.lock'}: File too large; nothing was started")
    assert proc.stderr.count("\n") == 1


def test_lock_file_that_cannot_be_created_is_one_sentence(clips, tmp_path):
    workdir = tmp_path / "w"
    (workdir / ".tsnpipe.lock").mkdir(parents=True)  # a folder where the lock file should be
    result = invoke("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_one_line_error(result, ".tsnpipe.lock")


# ---- kills -------------------------------------------------------------------------------------------

def test_killed_run_with_torn_journal_reruns_to_the_same_frames(clips, tmp_path, clean_run):
    workdir = tmp_path / "w"
    journal = journal_path(workdir, "frames")
    proc = subprocess.Popen(tsnpipe_cmd("extract-frames", str(clips), "-w", str(workdir), *FRAMES),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with open(journal, "ab") as fh:
        fh.write(b'12345678 {"video_id": "wave/RA')  # as if the kill had hit mid-line
    outside = tree(clips)
    for _ in range(2):  # the second rerun reads what the first appended after the cut tail
        rerun = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
        assert_clean_process(rerun, 0)
    assert "3 up to date" in rerun.stdout
    assert tree(workdir, "frames") == clean_run
    assert tree(clips) == outside
    status = run_tsnpipe("status", "-w", str(workdir))
    assert_clean_process(status, 0)
    assert "needs work: nothing" in status.stdout


# ---- tsnpipe deletes only what it made ---------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "theirs"), [("hdf5", "x.tmp"), ("hdf5", "shard-00007.h5"), ("lmdb", "notes.txt")])
def test_pack_refuses_a_store_folder_holding_files_it_did_not_write(extracted, tmp_path, fmt, theirs):
    store = tmp_path / "mine"
    store.mkdir()
    (store / theirs).write_bytes(b"the user's own file")
    result = invoke("pack", "-w", str(extracted), "--format", fmt, "--store", str(store), "--no-progress")
    assert_one_line_error(result, str(store), theirs, "did not write")
    assert sorted(p.name for p in store.iterdir()) == [theirs]
    assert (store / theirs).read_bytes() == b"the user's own file"


def test_a_users_file_dropped_into_a_packed_store_is_never_deleted(extracted):
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    store = extracted / "stores" / "frames.hdf5"
    (store / "x.tmp").write_bytes(b"mine")
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert_one_line_error(result, "x.tmp")
    assert (store / "x.tmp").read_bytes() == b"mine"


def test_shard_renamed_but_not_yet_indexed_is_swept_as_tsnpipes_own(extracted, monkeypatch):
    from tsnpipe.stages.store import hdf5_writer as pack_hdf5
    from tsnpipe.stages.store.reader import open_reader

    real_append = pack_hdf5._append_log

    def killed_right_after_the_rename(store_path, record):
        real_append(store_path, record)
        if "pending" in record:  # the index names the shard as pending: rename it, then die
            os.replace(store_path / f"{record['pending']}.tmp", store_path / record["pending"])
            raise KeyboardInterrupt

    store = extracted / "stores" / "frames.hdf5"
    monkeypatch.setattr(pack_hdf5, "_append_log", killed_right_after_the_rename)
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert result.exit_code == 1 and "Aborted" in result.output
    monkeypatch.undo()
    assert sorted(p.name for p in store.iterdir()) == ["index.json", "index.log", "shard-00001.h5"]
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in store.iterdir()) == ["index.json", "shard-00002.h5"]
    assert len(open_reader(store).video_ids()) == 3


def test_full_disk_at_every_fsync_of_pack_is_one_sentence_and_the_rerun_completes(extracted, tmp_path, monkeypatch):
    from tsnpipe.stages.store.reader import open_reader

    clean = tmp_path / "clean"
    shutil.copytree(extracted, clean)
    assert invoke("pack", "-w", str(clean), "--format", "hdf5", "--shard-mb", "1", "--no-progress").exit_code == 0
    failed = full_disk_at_every_fsync(monkeypatch, "pack", "-w", str(extracted), "--format", "hdf5", "--shard-mb", "1",
                                      "--no-progress")
    assert failed >= 3
    store, reference = open_reader(extracted / "stores" / "frames.hdf5"), open_reader(clean / "stores" / "frames.hdf5")
    assert store.video_ids() == reference.video_ids()
    for vid in store.video_ids():
        count = reference.count(vid)
        assert store.frames(vid, range(count), decode=False) == reference.frames(vid, range(count), decode=False)
    assert not [p for p in (extracted / "stores" / "frames.hdf5").iterdir() if p.name.endswith(".tmp")]
    assert "needs work: nothing" in invoke("status", "-w", str(extracted)).output.split("pack-hdf5")[1]


def test_lmdb_store_on_a_disk_that_fills_is_one_sentence_and_the_rerun_completes(extracted):
    args = tsnpipe_cmd("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress")
    proc = subprocess.run(args, capture_output=True, text=True, preexec_fn=file_size_limit(16384))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: Cannot write the LMDB store") and proc.stderr.count("\n") == 1
    assert_clean_process(run_tsnpipe("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress"), 0)
    assert "needs work: nothing" in run_tsnpipe("status", "-w", str(extracted)).stdout.split("pack-lmdb")[1]


def test_pack_refuses_to_start_a_video_the_disk_has_no_room_for(extracted, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert_one_line_error(result, "1.0 MB free", "frames.hdf5")
    monkeypatch.undo()
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    assert sorted(p.name for p in (extracted / "stores" / "frames.hdf5").iterdir()) == ["index.json", "shard-00001.h5"]


def test_a_checkpoint_that_does_not_fit_is_one_sentence_and_the_last_one_stays(tmp_path):
    """torch.save reports a full disk as RuntimeError("unexpected pos"); the CLI needs the OSError behind it."""
    import torch

    from tsnpipe.manifests.files import os_error_message
    from tsnpipe.stages.train.checkpoint import save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()
    script = ("import sys, torch; from tsnpipe.stages.train.checkpoint import save_checkpoint\n"
              "try:\n    save_checkpoint(sys.argv[1], {'epoch': 2, 'model': torch.zeros(1 << 20)})\n"
              "except OSError as error:\n    print(error.errno, error.filename)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                          preexec_fn=file_size_limit(1 << 20))
    assert proc.returncode == 0 and proc.stdout.split() == [str(errno.EFBIG), str(path)], proc.stderr
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # the temp file is gone
    assert torch.load(path, weights_only=True)["epoch"] == 1
    message = os_error_message(OSError(errno.ENOSPC, "No space left on device", str(path)))
    assert message.startswith(f"No space left on device while writing {path}")
