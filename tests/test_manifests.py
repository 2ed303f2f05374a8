"""The manifest engine: the needs-work rule, durable rows, atomic compaction and the workdir lock."""

import json

import pytest

from tsnpipe.manifests.decide import (FAILED_BEFORE, INPUT_CHANGED, NEW, OUTPUT_MISSING, PARAMS_CHANGED,
                                      needs_content_hash, needs_work, params_hash)
from tsnpipe.manifests.files import WorkdirBusy, WorkdirLock, replace_dir, sweep_temps, temp_sibling
from tsnpipe.manifests.table import Manifest

FP = {"size": 10, "mtime_ns": 5}
DONE = {"video_id": "a", "params_hash": "p", "fingerprint": json.dumps(FP), "status": "done"}


@pytest.mark.parametrize("row, fingerprint, phash, present, expected", [
    (None, FP, "p", False, NEW),
    (DONE, FP, "q", True, PARAMS_CHANGED),
    (DONE, {"size": 11, "mtime_ns": 5}, "p", True, INPUT_CHANGED),
    (DONE, {"size": 10, "mtime_ns": 6}, "p", True, INPUT_CHANGED),
    ({**DONE, "status": "failed"}, FP, "p", False, FAILED_BEFORE),
    (DONE, FP, "p", False, OUTPUT_MISSING),
    (DONE, FP, "p", True, None),
    # touched but identical bytes: the content hash says the input is the same
    ({**DONE, "fingerprint": json.dumps({**FP, "hash": "h"})}, {"size": 10, "mtime_ns": 9, "hash": "h"}, "p", True,
     None),
    ({**DONE, "fingerprint": json.dumps({**FP, "hash": "h"})}, {"size": 10, "mtime_ns": 9, "hash": "k"}, "p", True,
     INPUT_CHANGED),
])
def test_needs_work_reasons(row, fingerprint, phash, present, expected):
    assert needs_work(row, fingerprint, phash, present) == expected


def test_content_hash_only_when_mtime_moved():
    assert not needs_content_hash(None, FP)
    assert not needs_content_hash(FP, FP)
    assert not needs_content_hash(FP, {"size": 11, "mtime_ns": 6})
    assert needs_content_hash(FP, {"size": 10, "mtime_ns": 6})


def test_params_hash_ignores_key_order_and_sees_values():
    assert params_hash({"fps": 10, "q": 2}) == params_hash({"q": 2, "fps": 10})
    assert params_hash({"fps": 10, "q": 2}) != params_hash({"fps": 5, "q": 2})


def test_rows_survive_without_compaction_and_torn_line_is_ignored(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    manifest.record({"video_id": "a", "status": "done"})
    manifest.record({"video_id": "b", "status": "failed"})
    with open(manifest.journal, "a") as fh:
        fh.write('{"video_id": "c", "sta')  # a crash in the middle of writing a row
    rows = Manifest(tmp_path, "frames").rows
    assert sorted(rows) == ["a", "b"]


def test_compaction_folds_journal_and_later_rows_win(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    manifest.record({"video_id": "a", "status": "failed", "frames": None})
    manifest.compact()
    assert not manifest.journal.exists() and manifest.path.exists()
    manifest.record({"video_id": "a", "status": "done", "frames": 12})
    reloaded = Manifest(tmp_path, "frames").rows
    assert reloaded["a"]["status"] == "done" and reloaded["a"]["frames"] == 12


def test_replace_dir_swaps_whole_folders(tmp_path):
    final = tmp_path / "frames" / "v"
    for content in ("old", "new"):
        tmp = temp_sibling(final)
        tmp.mkdir(parents=True)
        (tmp / "img_00001.jpg").write_text(content)
        replace_dir(tmp, final)
    assert (final / "img_00001.jpg").read_text() == "new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["v"]


def test_sweep_removes_leftovers_of_a_crash(tmp_path):
    leftover = temp_sibling(tmp_path / "cls" / "v")
    leftover.mkdir(parents=True)
    (tmp_path / "cls" / "kept").mkdir()
    assert sweep_temps(tmp_path) == 1
    assert [p.name for p in (tmp_path / "cls").iterdir()] == ["kept"]


def test_second_lock_on_a_workdir_is_refused(tmp_path):
    with WorkdirLock(tmp_path, "first"):
        with pytest.raises(WorkdirBusy, match="in use by pid"):
            with WorkdirLock(tmp_path, "second"):
                pass
    with WorkdirLock(tmp_path, "third"):
        pass
