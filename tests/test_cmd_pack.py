"""`tsnpipe pack` through Click and as a real process, on frames extracted from the sample clips."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from conftest import SAMPLES, run_tsnpipe
from packing_data import extracted_workdir, write_flow
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest
from tsnpipe.stages.store.reader import open_reader

VIDEO = "wave/RATRACE_wave_f_nm_np1_fr_goo_37"


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    return extracted_workdir(tmp_path_factory.mktemp("pack_cli") / "W")


@pytest.fixture
def workdir(extracted, tmp_path):
    shutil.copytree(extracted, tmp_path / "W")
    return tmp_path / "W"


def pack(workdir, *args):
    return CliRunner().invoke(main, ["pack", "-w", str(workdir), "--no-progress", *args])


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_pack_then_rerun_is_noop(workdir, fmt):
    result = pack(workdir, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "7 packed, 0 up to date, 0 failed" in result.output
    rows = Manifest(workdir, f"pack-{fmt}").rows
    assert rows[VIDEO]["status"] == "done" and rows[VIDEO]["rgb"] == 25 and len(rows[VIDEO]["checksum"]) == 64
    reader = open_reader(workdir / "stores" / f"frames.{fmt}")
    assert reader.frames(VIDEO, [24], decode=False) == [(workdir / "frames" / VIDEO / "img_00025.jpg").read_bytes()]
    reader.close()
    again = pack(workdir, "--format", fmt)
    assert "0 packed, 7 up to date, 0 failed" in again.output
    assert Manifest(workdir, f"pack-{fmt}").rows == rows


def test_flow_extracted_later_is_packed_then(workdir):
    pack(workdir, "--format", "hdf5")
    pairs = write_flow(VIDEO, workdir)
    Manifest(workdir, "flow").record({"video_id": VIDEO, "status": "done", "pairs": pairs, "clipped_fraction": 0.0,
                                      "output": f"flow/{VIDEO}", "error": None, "started_at": "2026-11-23T10:00:00"})
    result = pack(workdir, "--format", "hdf5")
    assert "1 packed, 6 up to date, 0 failed" in result.output
    assert open_reader(workdir / "stores" / "frames.hdf5").count(VIDEO, "flow_y") == pairs == 24


def test_new_video_is_packed_alone_and_failed_extractions_are_skipped(workdir, tmp_path):
    pack(workdir, "--format", "lmdb")
    videos = tmp_path / "more"
    (videos / "wave").mkdir(parents=True)
    shutil.copy(SAMPLES / f"{VIDEO}.avi", videos / "wave" / "RATRACE_again.avi")
    (videos / "broken").mkdir()
    (videos / "broken" / "not_a_video.avi").write_bytes(b"this is no video")
    CliRunner().invoke(main, ["extract-frames", str(videos), "-w", str(workdir), "--size", "64", "--no-progress"])
    assert Manifest(workdir, "frames").rows["broken/not_a_video"]["status"] == "failed"
    result = pack(workdir, "--format", "lmdb")
    assert "pack: 8 extracted videos" in result.output and "1 packed, 7 up to date, 0 failed" in result.output
    assert "wave/RATRACE_again" in open_reader(workdir / "stores" / "frames.lmdb").video_ids()


def test_a_video_that_cannot_be_packed_is_a_failed_row_and_exit_code_1(workdir):
    (workdir / "frames" / VIDEO / "img_00003.jpg").unlink()
    result = pack(workdir, "--format", "hdf5")
    assert result.exit_code == 1
    assert "6 packed, 0 up to date, 1 failed (see" in result.output
    row = Manifest(workdir, "pack-hdf5").rows[VIDEO]
    assert row["status"] == "failed" and "img_00003.jpg" in row["error"]


def test_pack_needs_extracted_frames(tmp_path):
    result = pack(tmp_path / "W", "--format", "lmdb")
    assert result.exit_code == 1 and "run `tsnpipe extract-frames`" in result.output and "Traceback" not in result.output


def test_pack_as_a_real_process_and_status_knows_it(workdir):
    store = workdir / "elsewhere.hdf5"
    result = run_tsnpipe("pack", "-w", str(workdir), "--format", "hdf5", "--store", str(store), "--shard-mb", "1")
    assert result.returncode == 0, result.stderr
    assert "7 packed, 0 up to date, 0 failed" in result.stdout and f"{store} holds" in result.stdout
    assert len(open_reader(store).video_ids()) == 7
    status = run_tsnpipe("status", "-w", str(workdir))
    assert "pack-hdf5" in status.stdout and "7 up to date; needs work: nothing" in status.stdout.split("pack-hdf5")[1]


def test_a_deleted_store_is_packed_again(workdir):
    pack(workdir, "--format", "lmdb")
    shutil.rmtree(workdir / "stores" / "frames.lmdb")
    result = pack(workdir, "--format", "lmdb")
    assert "7 packed, 0 up to date, 0 failed" in result.output
    assert len(open_reader(workdir / "stores" / "frames.lmdb").video_ids()) == 7


def test_a_store_packed_with_flow_images_is_repacked_as_pairs_once(workdir):
    pairs = write_flow(VIDEO, workdir)
    Manifest(workdir, "flow").record({"video_id": VIDEO, "status": "done", "pairs": pairs, "clipped_fraction": 0.0,
                                      "output": f"flow/{VIDEO}", "error": None, "started_at": "2026-11-23T10:00:00"})
    assert "7 packed" in pack(workdir, "--format", "lmdb", "--flow-layout", "images").output
    assert "0 packed, 7 up to date" in pack(workdir, "--format", "lmdb", "--flow-layout", "images").output
    store = workdir / "stores" / "frames.lmdb"
    before = open_reader(store).flow_stack(VIDEO, range(pairs))
    assert open_reader(store).flow_layout(VIDEO) == "images"
    result = pack(workdir, "--format", "lmdb")  # the default layout: pairs
    assert "7 packed, 0 up to date, 0 failed" in result.output, result.output
    assert "0 packed, 7 up to date" in pack(workdir, "--format", "lmdb").output
    reader = open_reader(store)
    assert reader.flow_layout(VIDEO) == "pairs"
    assert (reader.flow_stack(VIDEO, range(pairs)) == before).all()
    reader.close()


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_a_new_store_gets_every_video_though_the_default_store_holds_them(workdir, tmp_path, fmt):
    assert "7 packed" in pack(workdir, "--format", fmt).output
    other = tmp_path / f"other.{fmt}"
    result = pack(workdir, "--format", fmt, "--store", str(other))
    assert result.exit_code == 0, result.output
    assert "7 packed, 0 up to date, 0 failed" in result.output
    assert len(open_reader(other).video_ids()) == 7
    assert "0 packed, 7 up to date" in pack(workdir, "--format", fmt, "--store", str(other)).output
