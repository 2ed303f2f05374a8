"""manifests/columns.py: a few columns of a manifest, read column by column, give the rows `load_table` gives."""

from __future__ import annotations

import pytest

from tsnpipe.manifests.columns import load_columns
from tsnpipe.manifests.files import ManifestError
from tsnpipe.manifests.table import Manifest, load_table, manifest_path

COLUMNS = ["video_id", "status", "frames"]


def row(video_id: str, status: str = "done", frames: int | None = 30) -> dict:
    return {"video_id": video_id, "status": status, "frames": frames, "output": f"frames/{video_id}", "seconds": 0.5}


def test_the_journal_applies_over_the_table_as_in_load_table(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    for name in ("b/2", "a/1", "c/3"):
        manifest.record(row(name))
    manifest.compact()
    manifest = Manifest(tmp_path, "frames")
    manifest.record(row("a/1", "failed", None))  # redone and failed since the table was written
    manifest.record(row("a/0", frames=12))
    columns = load_columns(tmp_path, "frames", COLUMNS)
    assert list(columns["video_id"]) == ["a/0", "a/1", "b/2", "c/3"]
    assert list(columns["status"]) == ["done", "failed", "done", "done"]
    table = load_table(tmp_path, "frames")[COLUMNS]
    assert columns.astype(str).equals(table.astype(str).replace("None", "nan"))


def test_a_stage_that_never_ran_is_an_empty_frame(tmp_path):
    assert load_columns(tmp_path, "flow", ["video_id", "status", "pairs"]).empty


def test_a_damaged_table_is_the_same_one_sentence_error(tmp_path):
    manifest = Manifest(tmp_path, "frames")
    manifest.record(row("a/1"))
    manifest.compact()
    path = manifest_path(tmp_path, "frames")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ManifestError, match="is damaged .*run `tsnpipe status --repair"):
        load_columns(tmp_path, "frames", COLUMNS)
