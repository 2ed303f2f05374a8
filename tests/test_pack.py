"""Packing real frames and flow images into LMDB and sharded HDF5 stores: exact bytes, incremental
additions that leave the rest alone, replacement of re-extracted videos, and a kill mid-pack."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import lmdb
import pytest

from packing_data import SAMPLE_IDS, extract_frames, make_workdir, write_flow
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.pack import pack_videos, stored_videos
from tsnpipe.stages.store.reader import KINDS, frame_name, open_reader, release_lmdb

FIRST, LATER = SAMPLE_IDS[:3], SAMPLE_IDS[3]
STORES = {"lmdb": "frames.lmdb", "hdf5": "frames.hdf5"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A workdir with four videos: three packed first, one added later."""
    return make_workdir(tmp_path_factory.mktemp("pack") / "W", video_ids=SAMPLE_IDS[:4], count=6)


@pytest.fixture
def workdir(source, tmp_path):
    shutil.copytree(source, tmp_path / "W")
    return tmp_path / "W"


def every_file(workdir: Path, video_id: str) -> dict[tuple[str, int], bytes]:
    files = {}
    for kind in KINDS:
        folder = workdir / ("frames" if kind == "rgb" else "flow") / video_id
        for path in sorted(folder.glob(frame_name(kind, 0).replace("00001", "*"))):
            files[(kind, int(path.stem[-5:]) - 1)] = path.read_bytes()
    return files


def every_stored(store: Path, video_id: str) -> dict[tuple[str, int], bytes]:
    reader = open_reader(store)
    stored = {}
    for kind in KINDS:
        positions = list(range(reader.count(video_id, kind)))
        stored.update({(kind, p): data for p, data in zip(positions, reader.frames(video_id, positions, kind, decode=False))})
    reader.close()
    return stored


def lmdb_entries(store: Path) -> dict[bytes, bytes]:
    release_lmdb(store)  # LMDB allows one environment per store and process
    env = lmdb.open(str(store), readonly=True, lock=False, max_dbs=2)
    entries = {}
    for name in (b"images", b"meta"):
        with env.begin(db=env.open_db(name, create=False)) as txn:
            entries.update({name + b":" + key: value for key, value in txn.cursor()})
    env.close()
    return entries


def files_state(store: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in store.iterdir()}


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_every_image_reads_back_byte_identical_to_its_jpeg(workdir, fmt):
    store = workdir / "stores" / STORES[fmt]
    facts = pack_videos(workdir, store, fmt, FIRST)
    assert [f["status"] for f in facts] == ["done"] * 3
    for video_id in FIRST:
        files = every_file(workdir, video_id)
        assert len(files) == 6 + 5 + 5
        assert every_stored(store, video_id) == files


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_facts_give_counts_location_and_checksum(workdir, fmt):
    store = workdir / "stores" / STORES[fmt]
    facts = {f["video_id"]: f for f in pack_videos(workdir, store, fmt, FIRST)}
    fact = facts[FIRST[0]]
    assert (fact["rgb"], fact["flow_pairs"], fact["format"]) == (6, 5, fmt)
    assert fact["bytes"] == sum(len(b) for b in every_file(workdir, FIRST[0]).values())
    assert len(fact["checksum"]) == 64 and fact["location"]
    assert stored_videos(store, fmt)[FIRST[0]] == {"checksum": fact["checksum"], "location": fact["location"],
                                                  "flow_layout": "images"}


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_rerun_is_noop(workdir, fmt):
    store = workdir / "stores" / STORES[fmt]
    pack_videos(workdir, store, fmt, FIRST)
    before = files_state(store)
    facts = pack_videos(workdir, store, fmt, FIRST)
    assert all(f["unchanged"] for f in facts)
    if fmt == "hdf5":
        assert files_state(store) == before


def test_lmdb_add_video_leaves_other_entries_untouched(workdir):
    store = workdir / "stores" / "frames.lmdb"
    pack_videos(workdir, store, "lmdb", FIRST)
    before = lmdb_entries(store)
    facts = pack_videos(workdir, store, "lmdb", FIRST + [LATER])
    assert [f["unchanged"] for f in facts] == [True, True, True, False]
    after = lmdb_entries(store)
    assert {k: v for k, v in after.items() if k in before} == before
    added = {k for k in after if k not in before}
    assert len(added) == 6 + 5 + 5 + 1 and all(LATER.encode() in k for k in added)


def test_hdf5_add_video_appends_a_shard_and_leaves_the_others_untouched(workdir):
    store = workdir / "stores" / "frames.hdf5"
    pack_videos(workdir, store, "hdf5", FIRST)
    before = files_state(store)
    pack_videos(workdir, store, "hdf5", FIRST + [LATER])
    after = files_state(store)
    shards_before = {n: s for n, s in before.items() if n.endswith(".h5")}
    assert {n: after[n] for n in shards_before} == shards_before
    assert sorted(set(after) - set(before)) == ["shard-00002.h5"]
    assert every_stored(store, LATER) == every_file(workdir, LATER)


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_reextracted_video_replaces_its_entries(workdir, fmt):
    store = workdir / "stores" / STORES[fmt]
    pack_videos(workdir, store, fmt, FIRST, shard_bytes=1)  # one shard per video
    changed = FIRST[1]
    shutil.rmtree(workdir / "frames" / changed)
    shutil.rmtree(workdir / "flow" / changed)
    extract_frames(changed, workdir, count=4, size="96:72")
    write_flow(changed, workdir)
    facts = {f["video_id"]: f for f in pack_videos(workdir, store, fmt, FIRST)}
    assert [facts[v]["unchanged"] for v in FIRST] == [True, False, True]
    assert every_stored(store, changed) == every_file(workdir, changed)
    assert open_reader(store).frames(changed, [0], "rgb")[0].shape == (72, 96, 3)
    if fmt == "lmdb":
        assert not any(k.startswith(f"images:{changed}/rgb/00005".encode()) for k in lmdb_entries(store))
    else:  # the replaced video's old shard held nothing else, so it is gone
        assert sorted(p.name for p in store.glob("*.h5")) == ["shard-00001.h5", "shard-00003.h5", "shard-00004.h5"]


def test_video_with_a_gap_fails_alone(workdir):
    (workdir / "frames" / FIRST[0] / "img_00003.jpg").unlink()
    facts = pack_videos(workdir, workdir / "stores" / "frames.lmdb", "lmdb", FIRST)
    assert [f["status"] for f in facts] == ["failed", "done", "done"]
    assert "img_00003.jpg" in facts[0]["error"]
    assert open_reader(workdir / "stores" / "frames.lmdb").video_ids() == sorted(FIRST[1:])


def test_video_without_flow_is_packed_with_zero_pairs(workdir):
    shutil.rmtree(workdir / "flow" / FIRST[0])
    [fact] = pack_videos(workdir, workdir / "stores" / "frames.hdf5", "hdf5", FIRST[:1])
    assert (fact["status"], fact["rgb"], fact["flow_pairs"]) == ("done", 6, 0)


def test_unknown_format_is_refused(workdir):
    with pytest.raises(TsnpipeError, match="--format lmdb or --format hdf5"):
        pack_videos(workdir, workdir / "stores" / "x", "zip", FIRST)


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tsnpipe.stages.store.pack import pack_videos

    workdir, store, fmt, shard_bytes, *ids = sys.argv[1:]

    def slowly():
        for video_id in ids:
            print("next", video_id, flush=True)
            time.sleep(0.4)
            yield video_id

    pack_videos(workdir, store, fmt, slowly(), shard_bytes=int(shard_bytes))
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize(("fmt", "shard_bytes"), [("lmdb", 1), ("hdf5", 1), ("hdf5", 1 << 30)])
def test_kill_mid_pack_then_rerun_gives_a_complete_store(workdir, fmt, shard_bytes):
    store = workdir / "stores" / STORES[fmt]
    ids = SAMPLE_IDS[:4]
    args = [sys.executable, "-c", KILL_SCRIPT, str(workdir), str(store), fmt, str(shard_bytes), *ids]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    seen = [proc.stdout.readline() for _ in range(3)]  # the third video is being read: two are written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert all(line.startswith("next") for line in seen)
    partial = open_reader(store).video_ids() if store.exists() and any(store.iterdir()) else []
    assert len(partial) == (2 if shard_bytes == 1 else 0)  # whatever was committed is whole and readable
    if shard_bytes > 1:
        assert not list(store.glob("*.tmp"))  # the shard being built was in memory: nothing torn on disk
    facts = pack_videos(workdir, store, fmt, ids, shard_bytes=shard_bytes)
    assert all(f["status"] == "done" for f in facts)
    assert open_reader(store).video_ids() == sorted(ids)
    for video_id in ids:
        assert every_stored(store, video_id) == every_file(workdir, video_id)
    assert not list(store.glob("*.tmp"))
