"""`--shard K/N` without Slurm: deterministic, stable slices; shards side by side on one workdir, each with its
own journal and lock; folding by the next plain run or `tsnpipe status`; the locks between shards and plain runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tsnpipe.cli import main
from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.manifests.shards import Shard, ShardLock, shard_journal_path, shard_journals, shard_of
from tsnpipe.manifests.table import Manifest, encode_line, manifest_path, read_journal

FAST = ("--fps", "2", "--size", "48x36", "-j", "1", "--no-progress")
IDS = [f"class_{c}/v_{c}_g{g:02d}_c{k:02d}" for c in range(20) for g in range(10) for k in range(5)]


def frames(videos, workdir, *extra):
    return CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(workdir), *FAST, *extra])


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100])
def test_shards_are_disjoint_and_their_union_is_every_video(count):
    slices = [[vid for vid in IDS if Shard(k, count).owns(vid)] for k in range(count)]
    assert sorted(vid for piece in slices for vid in piece) == sorted(IDS)
    if count > 1:
        assert all(len(piece) < len(IDS) for piece in slices)  # hashed: no shard takes them all


def test_a_video_keeps_its_shard_when_videos_are_added_and_in_another_process():
    before = {vid: shard_of(vid, 8) for vid in IDS[:500]}
    after = {vid: shard_of(vid, 8) for vid in sorted(IDS + [f"new/v_{i}" for i in range(300)])}
    assert all(after[vid] == shard for vid, shard in before.items())
    code = ("import json, sys; from tsnpipe.manifests.shards import shard_of; "
            "print(json.dumps([shard_of(v, 8) for v in json.load(sys.stdin)]))")
    other = subprocess.run([sys.executable, "-c", code], input=json.dumps(IDS[:500]), capture_output=True, text=True,
                           env={"PYTHONHASHSEED": "123"}, check=True)
    assert json.loads(other.stdout) == list(before.values())  # not Python's salted hash()


@pytest.mark.parametrize("text", ["3/3", "1", "-1/2", "a/b", "1/0"])
def test_bad_shards_are_explained_in_one_line(clips, tmp_path, text):
    result = frames(clips, tmp_path / "w", "--shard", text)
    assert result.exit_code == 2 and "is not a shard: give K/N" in result.output


def test_two_shards_then_status_equal_a_plain_run(clips, tmp_path):
    plain = frames(clips, tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    work = tmp_path / "w"
    counts = []
    for k in range(2):
        result = frames(clips, work, "--shard", f"{k}/2")
        assert result.exit_code == 0, result.output
        counts.append(sum(Shard(k, 2).owns(vid) for vid in Manifest(tmp_path / "plain", "frames").rows))
        assert f"{counts[-1]} extracted, 0 up to date, 0 failed" in result.output
    assert not manifest_path(work, "frames").exists()  # shards never write the table
    assert len(shard_journals(work, "frames")) == 2
    assert Manifest(work, "frames").rows.keys() == Manifest(tmp_path / "plain", "frames").rows.keys()
    status = CliRunner().invoke(main, ["status", "-w", str(work)])
    assert status.exit_code == 0, status.output
    assert "frames           3 up to date; needs work: nothing" in status.output
    assert shard_journals(work, "frames") == [] and manifest_path(work, "frames").exists()  # folded
    assert tree_digest(work / "frames") == tree_digest(tmp_path / "plain" / "frames")
    rerun = frames(clips, work)
    assert "0 extracted, 3 up to date, 0 failed" in rerun.output


def test_a_rerun_of_a_shard_redoes_nothing_and_a_plain_run_folds(clips, tmp_path):
    work = tmp_path / "w"
    frames(clips, work, "--shard", "0/2")
    again = frames(clips, work, "--shard", "0/2")
    assert "\n0 extracted, " in again.output and " 0 failed" in again.output
    plain = frames(clips, work)
    assert plain.exit_code == 0, plain.output
    mine = sum(Shard(0, 2).owns(vid) for vid in Manifest(work, "frames").rows)
    assert f"{3 - mine} extracted, {mine} up to date" in plain.output
    assert shard_journals(work, "frames") == []


def test_a_plain_run_is_refused_while_a_shard_runs_and_the_other_way(clips, tmp_path):
    work = tmp_path / "w"
    with ShardLock(work, "frames", Shard(1, 2), "tsnpipe extract-frames"):
        plain = frames(clips, work)
        assert plain.exit_code == 1
        assert "is in use by shards, e.g. shard 1/2 of tsnpipe extract-frames" in plain.output
        same = frames(clips, work, "--shard", "1/2")
        assert same.exit_code == 1 and "shard 1/2 of frames" in same.output and "already running" in same.output
        other = frames(clips, work, "--shard", "0/2")  # another shard runs beside it
        assert other.exit_code == 0, other.output
    with WorkdirLock(work, "tsnpipe pack"):
        shard = frames(clips, work, "--shard", "1/2")
        assert shard.exit_code == 1 and "in use by pid" in shard.output and "tsnpipe pack" in shard.output
    assert frames(clips, work, "--shard", "1/2").exit_code == 0


def test_shards_of_another_count_wait_for_the_fold(clips, tmp_path):
    work = tmp_path / "w"
    frames(clips, work, "--shard", "0/2")
    result = frames(clips, work, "--shard", "0/3")
    assert result.exit_code == 1 and "frames shards of 2, whose videos overlap shards of 3" in result.output
    CliRunner().invoke(main, ["status", "-w", str(work)])
    assert frames(clips, work, "--shard", "0/3").exit_code == 0


def test_torn_and_damaged_shard_journals_are_folded_like_the_journal(clips, tmp_path):
    work = tmp_path / "w"
    assert frames(clips, work, "--shard", "0/1").exit_code == 0
    journal = shard_journal_path(work, "frames", Shard(0, 1))
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    damaged = lines[1].replace(b'"done"', b'"dune"')  # the CRC no longer matches
    journal.write_bytes(lines[0] + damaged + lines[2] + encode_line({"video_id": "torn/x"})[:20])
    lost = json.loads(lines[1].split(b" ", 1)[1])["video_id"]
    assert lost not in Manifest(work, "frames").rows and "torn/x" not in Manifest(work, "frames").rows
    result = frames(clips, work)
    assert result.exit_code == 0, result.output
    assert "1 extracted, 2 up to date, 0 failed" in result.output  # only the damaged line's video is redone
    assert shard_journals(work, "frames") == []
    assert len(list(journal.parent.glob(f"{journal.name}.damaged-*"))) == 1


def test_a_shard_sweeps_only_the_temps_of_its_own_videos(clips, tmp_path):
    work = tmp_path / "w"
    frames(clips, work)
    ids = sorted(Manifest(work, "frames").rows)
    mine, theirs = next(v for v in ids if Shard(0, 2).owns(v)), next(v for v in ids if not Shard(0, 2).owns(v))
    mine_tmp, theirs_tmp = (work / "frames" / f"{vid}.tmp-999-abcdef12" for vid in (mine, theirs))
    for tmp in (mine_tmp, theirs_tmp):
        tmp.mkdir()
    frames(clips, work, "--shard", "0/2")
    assert not mine_tmp.exists() and theirs_tmp.exists()  # the other shard may be writing it now


def test_status_shows_each_shard_while_shards_run_and_folds_after(clips, tmp_path):
    work = tmp_path / "w"
    for k in range(2):
        frames(clips, work, "--shard", f"{k}/2")
    journal = shard_journal_path(work, "frames", Shard(0, 2))
    journal.write_bytes(journal.read_bytes() + encode_line({"video_id": "bad/v", "status": "failed", "error": "x"}))
    done = [sum(Shard(k, 2).owns(vid) for vid in Manifest(work, "frames").rows if vid != "bad/v") for k in range(2)]
    with ShardLock(work, "frames", Shard(1, 2), "tsnpipe extract-frames"):
        running = CliRunner().invoke(main, ["status", "-w", str(work)])
        assert (f"  shard 0/2     stopped; {done[0]} done, 1 failed since the last fold, of {done[0]} videos in the "
                f"shard (bad/v)") in running.output
        assert f"  shard 1/2     running; {done[1]} done, 0 failed since the last fold\n" in running.output
        assert len(shard_journals(work, "frames")) == 2  # not folded under a running shard
    idle = CliRunner().invoke(main, ["status", "-w", str(work), "--json"])
    assert "shards" not in json.loads(idle.output) and shard_journals(work, "frames") == []


def test_sigusr2_stops_a_shard_as_sigterm_does_and_its_rerun_finishes(clips, tmp_path):
    import signal
    import time

    from conftest import run_tsnpipe, tsnpipe_cmd
    from tsnpipe.manifests.shards import running

    work = tmp_path / "w"
    args = ("extract-frames", str(clips), "-w", str(work), "--fps", "10", "--size", "32", "-j", "2", "--no-progress",
            "--shard", "0/1")
    proc = subprocess.Popen(tsnpipe_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = shard_journal_path(work, "frames", Shard(0, 1))
    deadline = time.monotonic() + 60
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)  # what `tsnpipe slurm`'s scripts get before the time limit
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGUSR2, stderr
    assert stderr.splitlines() == ["Stopped by SIGUSR2; finished work is kept: run the command again to continue."]
    assert not running(work, "frames", Shard(0, 1))
    assert not [p for p in (work / "frames").rglob("*") if ".tmp-" in p.name]
    kept = {row["video_id"] for row in read_journal(journal)[0]}
    rerun = run_tsnpipe(*args)
    assert rerun.returncode == 0 and f"{3 - len(kept)} extracted, {len(kept)} up to date" in rerun.stdout


def test_a_plain_run_with_nothing_to_do_still_folds_the_shards(clips, tmp_path):
    work = tmp_path / "w"
    for k in range(2):
        frames(clips, work, "--shard", f"{k}/2")
    plain = frames(clips, work)
    assert "0 extracted, 3 up to date, 0 failed" in plain.output
    assert shard_journals(work, "frames") == [] and len(Manifest(work, "frames").rows) == 3
