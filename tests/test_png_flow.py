"""PNG flow end to end: `extract-flow --format png` -> build-splits -> pack (LMDB, HDF5) -> readers -> train."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES
from tsnpipe.cli import main
from tsnpipe.manifests.table import Manifest
from tsnpipe.stages.store.reader import FolderReader, open_reader

CLIPS = ["SoccerJuggling/v_SoccerJuggling_g23_c01", "SoccerJuggling/v_SoccerJuggling_g24_c01",
         "wave/RATRACE_wave_f_nm_np1_fr_goo_37", "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0",
         "wave/TrumanShow_wave_f_nm_np1_fr_med_26"]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def png_workdir(tmp_path_factory):
    """Five real clips (two classes) at 2 fps and 48x36, with TV-L1 flow written as PNG, split and packed."""
    root = tmp_path_factory.mktemp("pngflow")
    for clip in CLIPS:
        (root / "videos" / clip).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / f"{clip}.avi", root / "videos" / f"{clip}.avi")
    workdir = str(root / "w")
    invoke("extract-frames", str(root / "videos"), "-w", workdir, "--fps", "2", "--size", "48x36", "-j", "1",
           "--no-progress")
    invoke("extract-flow", "-w", workdir, "--format", "png", "--backend", "opencv", "-j", "2", "--no-progress")
    invoke("build-splits", "-w", workdir, "--folders", "--ratio", "0.5", "--group-regex", "^(.*)$",
           "--group-scope", "all")
    for fmt in ("lmdb", "hdf5"):
        invoke("pack", "-w", workdir, "--format", fmt, "--no-progress")
    return root / "w"


def test_flow_rows_record_the_png_format_and_the_folders_hold_png(png_workdir):
    rows = Manifest(png_workdir, "flow").rows
    assert sorted(rows) == CLIPS
    for clip, row in rows.items():
        assert row["status"] == "done" and row["image_format"] == "png" and row["pairs"] > 0
        folder = png_workdir / "flow" / clip
        assert len(list(folder.glob("flow_x_*.png"))) == row["pairs"] and not list(folder.glob("*.jpg"))


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_pack_stores_every_png_flow_image_pixel_for_pixel(png_workdir, fmt):
    flow_rows = Manifest(png_workdir, "flow").rows
    pack_rows = Manifest(png_workdir, f"pack-{fmt}").rows
    reader = open_reader(png_workdir / "stores" / f"frames.{fmt}")
    for clip in CLIPS:
        pairs = flow_rows[clip]["pairs"]
        assert pack_rows[clip]["flow_pairs"] == pairs and pack_rows[clip]["flow_format"] == "png"
        assert reader.count(clip, "flow_y") == pairs
        assert reader.flow_layout(clip) == "pairs"  # pack's default
        stored = reader.flow_stack(clip, range(pairs))[:, 1]
        files = [cv2.imread(str(png_workdir / "flow" / clip / f"flow_y_{k + 1:05d}.png"), cv2.IMREAD_UNCHANGED)
                 for k in range(pairs)]
        np.testing.assert_array_equal(stored, np.stack(files))
        assert reader.frames(clip, [0], "flow_x")[0].shape == (36, 48)
    reader.close()


def test_folder_reader_serves_png_flow(png_workdir):
    reader = FolderReader(png_workdir)
    clip = CLIPS[-1]
    pairs = Manifest(png_workdir, "flow").rows[clip]["pairs"]
    assert reader.count(clip, "flow_x") == pairs
    assert reader.frames(clip, [pairs - 1], "flow_x", decode=False)[0] == \
        (png_workdir / "flow" / clip / f"flow_x_{pairs:05d}.png").read_bytes()


@pytest.mark.parametrize("store", ["stores/frames.lmdb", "."])
def test_a_flow_model_trains_on_png_flow(png_workdir, store):
    run = f"png_{store.strip('./').replace('/', '_') or 'folders'}"
    result = invoke("train", "-w", str(png_workdir), "--modality", "flow", "--store", str(png_workdir / store),
                    "--run-name", run, "--backbone", "resnet18", "--pretrained", "none", "--segments", "2",
                    "--length", "2", "--size", "32", "--batch", "2", "--epochs", "1", "--workers", "0",
                    "--no-progress", "--no-channels-last", "--device", "cpu")
    assert "best epoch 1" in result.output
    assert (png_workdir / "runs" / run / "last.pt").is_file()
