"""`status --repair` rebuilds rows that carry what the stages downstream read (frame rates, upstream times)."""

from __future__ import annotations

import pytest

from chaos import extracted, invoke  # noqa: F401
from tsnpipe.manifests.table import Manifest, manifest_path

FLOW = ("--backend", "opencv", "-j", "1", "--no-progress")


@pytest.mark.parametrize("lost", [("frames",), ("flow",), ("frames", "flow")])
def test_repaired_frames_and_flow_rows_leave_both_stores_and_the_frame_rates_as_they_were(extracted, lost):
    w = str(extracted)
    assert invoke("extract-flow", "-w", w, *FLOW).exit_code == 0
    for fmt in ("lmdb", "hdf5"):
        assert invoke("pack", "-w", w, "--format", fmt, "--no-progress").exit_code == 0
    before = Manifest(extracted, "frames").rows
    assert all(row["src_fps"] for row in before.values())
    for stage in lost:
        manifest_path(extracted, stage).unlink()
    repaired = invoke("status", "-w", w, "--repair")
    assert repaired.exit_code == 0 and "needs work: 3" not in repaired.output, repaired.output
    after = Manifest(extracted, "frames").rows
    assert {vid: row["src_fps"] for vid, row in after.items()} == {vid: row["src_fps"] for vid, row in before.items()}
    assert "0 computed, 3 up to date" in invoke("extract-flow", "-w", w, *FLOW).output
    for fmt in ("lmdb", "hdf5"):
        assert "0 packed, 3 up to date" in invoke("pack", "-w", w, "--format", fmt, "--no-progress").output
