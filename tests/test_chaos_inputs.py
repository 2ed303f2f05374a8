"""Hostile inputs: links that lead nowhere, tables of another stage under a stage's name. Each bad item is a
failed row or one sentence naming the file and the fix; the good work goes on and is never redone."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import pytest

from chaos import (FRAMES, assert_clean_process, assert_one_line_error, clean_run, extracted,  # noqa: F401
                   file_size_limit, invoke, tree)
from conftest import run_tsnpipe, tsnpipe_cmd
from tsnpipe.manifests.table import Manifest, manifest_path


def test_broken_and_looping_symlinks_are_failed_rows_and_the_run_goes_on(clips, tmp_path, clean_run):
    (clips / "wave" / "gone.mp4").symlink_to(clips / "wave" / "deleted.mp4")
    (clips / "wave" / "ping.avi").symlink_to(clips / "wave" / "pong.avi")
    (clips / "wave" / "pong.avi").symlink_to(clips / "wave" / "ping.avi")
    workdir = tmp_path / "w"
    proc = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(proc, 1)
    assert "3 extracted, 0 up to date, 3 failed" in proc.stdout
    rows = Manifest(workdir, "frames").rows
    assert "does not exist; fix or remove the link" in rows["wave/gone"]["error"]
    assert "deleted.mp4" in rows["wave/gone"]["error"]
    assert "loops back on itself" in rows["wave/ping"]["error"] and "loops" in rows["wave/pong"]["error"]
    assert tree(workdir, "frames") == clean_run
    for link in ("gone.mp4", "ping.avi", "pong.avi"):
        os.unlink(clips / "wave" / link)
    again = run_tsnpipe("extract-frames", str(clips), "-w", str(workdir), *FRAMES)
    assert_clean_process(again, 0)
    assert "0 extracted, 3 up to date" in again.stdout
    status = run_tsnpipe("status", "-w", str(workdir))
    assert_clean_process(status, 0)


FLOW = ("--backend", "opencv", "-j", "1", "--no-progress")


@pytest.mark.parametrize("stem", ["a" * 246, "é" * 123])  # 250 bytes with ".avi": a temp name must not pass 255
def test_a_name_near_the_file_name_limit_goes_through_every_stage(clips, tmp_path, stem):
    os.replace(clips / "wave" / "RATRACE_wave_f_nm_np1_fr_goo_37.avi", clips / "wave" / f"{stem}.avi")
    workdir = tmp_path / "w"
    for args in (["extract-frames", str(clips), *FRAMES], ["extract-flow", *FLOW],
                 ["pack", "--format", "hdf5", "--no-progress"], ["pack", "--format", "lmdb", "--no-progress"],
                 ["build-splits", "--folders", "--group-scope", "all", "--group-regex", "^(.)"]):  # a clip a class
        result = invoke(*args, "-w", str(workdir))
        assert result.exit_code == 0 and "failed" not in result.output.replace(" 0 failed", ""), result.output
    assert Manifest(workdir, "flow").rows[f"wave/{stem}"]["status"] == "done"
    assert (workdir / "frames" / "wave" / stem / "img_00001.jpg").is_file()


@pytest.mark.parametrize("foreign", ["flow", "pack-hdf5"])
def test_another_stages_table_is_refused_and_repair_rebuilds_it_keeping_flow_up_to_date(extracted, clips, foreign):
    assert invoke("extract-flow", "-w", str(extracted), *FLOW).exit_code == 0
    assert invoke("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress").exit_code == 0
    flow_rows = Manifest(extracted, "flow").rows
    frames_table = manifest_path(extracted, "frames")
    shutil.copy(manifest_path(extracted, foreign), frames_table)  # a slip of the hand: cp flow.parquet frames.parquet
    sentence = f"is the table of the {foreign} stage, not of frames"
    for args in (["extract-flow", *FLOW], ["extract-frames", str(clips), *FRAMES], ["status"]):
        error = assert_one_line_error(invoke(*args, "-w", str(extracted)), str(frames_table), sentence, "status --repair")
        assert "manifests are damaged" not in error  # one table, said once
    assert Manifest(extracted, "flow").rows == flow_rows  # nothing was read as frames, no flow row was touched
    repaired = invoke("status", "-w", str(extracted), "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "frames: 3 rows rebuilt" in repaired.output and "set aside" in repaired.output
    assert "input changed" not in repaired.output and "needs work: 3" not in repaired.output
    assert "0 computed, 3 up to date" in invoke("extract-flow", "-w", str(extracted), *FLOW).output
    assert "0 extracted, 3 up to date" in invoke("extract-frames", str(clips), "-w", str(extracted), *FRAMES).output


def test_a_table_of_an_older_version_without_its_stage_is_told_by_its_columns(extracted):
    import pyarrow.parquet as pq

    assert invoke("extract-flow", "-w", str(extracted), *FLOW).exit_code == 0
    for stage in ("frames", "flow"):  # as older versions wrote them: no stage in the metadata
        path = manifest_path(extracted, stage)
        pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    assert "needs work: nothing" in invoke("status", "-w", str(extracted)).output
    shutil.copy(manifest_path(extracted, "flow"), manifest_path(extracted, "frames"))
    assert_one_line_error(invoke("status", "-w", str(extracted)), "is the table of the flow stage, not of frames")


def test_hdf5_pack_under_a_file_size_limit_is_one_sentence_and_the_rerun_completes(extracted):
    """h5py cannot survive EFBIG mid-write (it crashed in its clean-up, exit 139): the limit is checked first."""
    args = ("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    proc = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, preexec_fn=file_size_limit(8 << 10))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: The file size limit of this process (ulimit -f) is") and \
        proc.stderr.count("\n") == 1, proc.stderr
    roomy = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, preexec_fn=file_size_limit(4 << 20))
    assert_clean_process(roomy, 0)  # a limit the shards fit under is no reason to stop
    assert sorted(p.name for p in (extracted / "stores" / "frames.hdf5").iterdir()) == ["index.json", "shard-00001.h5"]
    assert "needs work: nothing" in run_tsnpipe("status", "-w", str(extracted)).stdout.split("pack-hdf5")[1]


UNCHECKED_PACK = """
import sys
from tsnpipe.stages.store import hdf5_writer
hdf5_writer.check_free_space = lambda *args, **kwargs: None  # as on a quota, which no check before can see
from tsnpipe.cli import main
sys.exit(main())
"""


def test_hdf5_pack_that_meets_a_real_write_failure_midway_is_one_sentence_and_keeps_what_was_committed(extracted):
    """Without the checks before writing, the kernel's own EFBIG reaches the shard's write: one line, exit 1,
    no h5py crash (was: tracebacks and exit 139), the committed shard kept and the rerun completes."""
    args = ("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress", "--shard-mb", "1")
    proc = subprocess.run([sys.executable, "-c", UNCHECKED_PACK, *args], capture_output=True, text=True,
                          preexec_fn=file_size_limit(12 << 10))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "File too large" in proc.stderr and "shard-00001.h5.tmp" in proc.stderr, proc.stderr
    store = extracted / "stores" / "frames.hdf5"
    assert sorted(p.name for p in store.iterdir()) == ["index.json"]  # no temp left, nothing indexed
    roomy = run_tsnpipe(*args)
    assert_clean_process(roomy, 0)
    assert "3 packed, 0 up to date, 0 failed" in roomy.stdout


def test_hdf5_pack_over_a_quota_is_one_sentence_and_the_rerun_completes(extracted, monkeypatch):
    """A quota (EDQUOT) that no free-space check sees, met by the shard's write."""
    real_write = os.write

    def over_quota(fd, data):
        if len(data) > 4096:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", over_quota)
    args = ("pack", "-w", str(extracted), "--format", "hdf5", "--no-progress")
    assert_one_line_error(invoke(*args), "quota", "shard-00001.h5.tmp")
    monkeypatch.setattr(os, "write", real_write)
    assert "3 packed, 0 up to date, 0 failed" in invoke(*args).output
    assert "needs work: nothing" in invoke("status", "-w", str(extracted)).output.split("pack-hdf5")[1]


@pytest.mark.parametrize("content", [b"[1, 2]", b'"a string"', b"\xff\xfe not utf-8"])
def test_a_store_index_that_is_not_ours_is_one_sentence(extracted, tmp_path, content):
    store = tmp_path / "store.hdf5"
    store.mkdir()
    (store / "index.json").write_bytes(content)
    result = invoke("pack", "-w", str(extracted), "--format", "hdf5", "--store", str(store), "--no-progress")
    assert_one_line_error(result, str(store / "index.json"))
    assert (store / "index.json").read_bytes() == content


@pytest.mark.parametrize("key", [b"meta", b"mine"])
def test_a_users_own_lmdb_is_refused_and_left_as_it_was(extracted, tmp_path, key):
    import lmdb

    store = tmp_path / "theirs.lmdb"
    env = lmdb.open(str(store), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(key, b"the user's own value")
    env.close()
    before = (store / "data.mdb").read_bytes()
    result = invoke("pack", "-w", str(extracted), "--format", "lmdb", "--store", str(store), "--no-progress")
    assert_one_line_error(result, str(store), "did not write")
    assert (store / "data.mdb").read_bytes() == before


def test_a_score_file_whose_format_is_an_array_is_one_sentence(tmp_path):
    import pickle

    import numpy as np

    content = {"format": np.array([1, 2]), "version": 1, "video_ids": ["a"], "labels": [0], "class_names": ["x"],
               "scores": np.zeros((1, 1), np.float32), "aggregation": {}, "source": {}}
    for name in ("rgb.pkl", "flow.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(content))
    result = invoke("fuse", str(tmp_path / "rgb.pkl"), str(tmp_path / "flow.pkl"))
    assert_one_line_error(result, "rgb.pkl", "not a valid tsnpipe score file", "format")


def test_fuse_on_a_full_disk_names_the_file_it_could_not_write(tmp_path):
    import numpy as np

    from tsnpipe.stages.scores.files import write_scores

    for name in ("rgb.pkl", "flow.pkl"):
        write_scores(tmp_path / name, ["a/v1", "b/v2"], np.array([0, 1]), ["a", "b"], np.eye(2, dtype=np.float32),
                     {"modality": name[:-4]}, {"checkpoint": "x"})
    out = tmp_path / "fused.pkl"
    proc = subprocess.run(tsnpipe_cmd("fuse", str(tmp_path / "rgb.pkl"), str(tmp_path / "flow.pkl"), "--out", str(out)),
                          capture_output=True, text=True, preexec_fn=file_size_limit(64))
    assert_clean_process(proc, 1)
    assert proc.stderr.startswith(f"Error: File too large while writing {out}") and proc.stderr.count("\n") == 1, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_lmdb_store_files_follow_the_umask(extracted):
    before = os.umask(0o002)
    try:
        assert invoke("pack", "-w", str(extracted), "--format", "lmdb", "--no-progress").exit_code == 0
    finally:
        os.umask(before)
    for name in ("data.mdb", "lock.mdb"):
        assert (extracted / "stores" / "frames.lmdb" / name).stat().st_mode & 0o777 == 0o664, name


def test_a_relative_store_outside_the_workdir_is_found_again_by_the_rerun(extracted, tmp_path):
    args = ("pack", "-w", str(extracted), "--format", "hdf5", "--store", "elsewhere/frames.hdf5", "--no-progress")
    assert_clean_process(subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, cwd=tmp_path), 0)
    assert (tmp_path / "elsewhere" / "frames.hdf5" / "index.json").is_file()
    again = subprocess.run(tsnpipe_cmd(*args), capture_output=True, text=True, cwd=tmp_path)
    assert_clean_process(again, 0)
    assert "0 packed, 3 up to date" in again.stdout
    assert "needs work: nothing" in run_tsnpipe("status", "-w", str(extracted)).stdout.split("pack-hdf5")[1]


class _CarriesCode:
    def __reduce__(self):  # unpickling would call print: a file that runs code when loaded
        return (print, ("this must never run",))


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18", "c3d"])
@pytest.mark.parametrize("content", ["garbage", "code"])
def test_a_3d_pretrained_file_that_is_garbage_or_carries_code_is_one_sentence(tmp_path, arch, content):
    import torch

    from tsnpipe.stages.models.clip_net import build_clip_backbone
    from tsnpipe.stages.train.model import ModelError

    path = tmp_path / "weights.pt"
    if content == "garbage":
        path.write_bytes(b"\x00not a torch file at all\xff" * 64)
    else:
        torch.save({"conv1.weight": _CarriesCode()}, path)
    with pytest.raises(ModelError) as refused:
        build_clip_backbone(arch, str(path), 0.5)
    message = str(refused.value)
    assert str(path) in message and "\n" not in message and "torch.save" in message
