"""The column-wise plan gives, for every kind of row, the reason `needs_work` gives (real files, a real table
with a journal over it)."""

from __future__ import annotations

import json
import os

from tsnpipe.manifests.decide import (FAILED_BEFORE, INPUT_CHANGED, NEW, OUTPUT_MISSING, PARAMS_CHANGED,
                                      content_hash, params_hash)
from tsnpipe.manifests.table import Manifest
from tsnpipe.planning import Candidates, plan
from tsnpipe.runner import Stage, hash_files

PARAMS = {"fps": 1}
HOUR = 3600 * 10**9


def fingerprint(path, **changes) -> str:
    st = os.stat(path)
    found = {"hash": content_hash(path), "mtime_ns": st.st_mtime_ns, "size": st.st_size, **changes}
    return json.dumps({k: v for k, v in found.items() if v is not None}, sort_keys=True)


def test_every_reason_matches_the_row_rule_and_the_journal_wins(tmp_path):
    videos, workdir = tmp_path / "videos", tmp_path / "w"
    names = ["same", "new", "params", "bigger", "touched_same", "touched_other", "hashed_then", "failed", "gone",
             "journal_params"]
    for name in names:
        (videos / "c").mkdir(parents=True, exist_ok=True)
        (videos / "c" / f"{name}.avi").write_bytes(name.encode() * 100)
        if name != "gone":
            (workdir / "frames" / "c" / name).mkdir(parents=True, exist_ok=True)
    path = {name: videos / "c" / f"{name}.avi" for name in names}
    good = params_hash(PARAMS)

    def row(name, **changes):
        return {"video_id": f"c/{name}", "source": str(path[name]), "params_hash": good, "status": "done",
                "error": None, "output": f"frames/c/{name}", "fingerprint": fingerprint(path[name]), **changes}

    st = os.stat(path["hashed_then"])
    rows = [row("same"), row("params", params_hash="other"),
            row("bigger", fingerprint=fingerprint(path["bigger"], size=1)),
            row("touched_same", fingerprint=fingerprint(path["touched_same"], mtime_ns=1)),
            row("touched_other", fingerprint=fingerprint(path["touched_other"], mtime_ns=1, hash="0" * 32)),
            row("hashed_then", fingerprint=fingerprint(path["hashed_then"], mtime_ns=1, hash="f" * 32),
                seen=json.dumps({"mtime_ns": st.st_mtime_ns, "size": st.st_size}, sort_keys=True)),
            row("failed", status="failed", error="boom", output=None), row("gone"), row("journal_params")]
    manifest = Manifest(workdir, "frames")
    manifest.record_many(rows)
    manifest.compact()
    manifest = Manifest(workdir, "frames")
    manifest.record(row("journal_params", params_hash="older"))  # a journal line over the table's row
    manifest = Manifest(workdir, "frames")
    assert manifest._rows is None

    cands = Candidates([f"c/{n}" for n in names], [str(path[n]) for n in names],
                       sizes=[os.stat(path[n]).st_size for n in names],
                       mtimes=[os.stat(path[n]).st_mtime_ns for n in names])
    stage = Stage(name="frames", verb="", params=PARAMS, output_root="frames", work=None)
    hashed = []
    planned = plan(workdir, stage, cands, manifest, lambda paths: hashed.extend(paths) or hash_files(paths))
    reasons = {item.video_id.split("/")[1]: why for item, why in planned.todo}
    assert reasons == {"new": NEW, "params": PARAMS_CHANGED, "bigger": INPUT_CHANGED,
                       "touched_other": INPUT_CHANGED, "failed": FAILED_BEFORE, "gone": OUTPUT_MISSING,
                       "journal_params": PARAMS_CHANGED}
    assert planned.up_to_date == 3  # same, touched_same (its content hash), hashed_then (its `seen`)
    assert sorted(os.path.basename(p) for p in hashed) == ["touched_other.avi", "touched_same.avi"]
    assert [r["video_id"] for r in planned.refreshed] == ["c/touched_same"]
    assert manifest._rows is None  # no row became a dict but those with work or a hash to check


def test_a_derived_fingerprint_written_in_another_key_order_is_the_same_input(tmp_path):
    workdir = tmp_path / "w"
    (workdir / "flow" / "v").mkdir(parents=True)
    stage = Stage(name="flow", verb="", params=PARAMS, output_root="flow", work=None, hash_content=False)
    manifest = Manifest(workdir, "flow")
    base = {"params_hash": params_hash(PARAMS), "status": "done", "output": "flow/v"}
    manifest.record_many([{"video_id": "v", **base, "fingerprint": '{"size": 4, "frames": {"b": 1, "a": 2}}'},
                          {"video_id": "w", **base, "output": "flow/v", "fingerprint": '{"size": 5}'}])
    cands = Candidates(["v", "w"], ["frames/v", "frames/w"],
                       fingerprints=['{"frames": {"a": 2, "b": 1}, "size": 4}', '{"size": 6}'])
    planned = plan(workdir, stage, cands, manifest, hash_files)
    assert [(item.video_id, why) for item, why in planned.todo] == [("w", INPUT_CHANGED)]
    assert planned.up_to_date == 1
