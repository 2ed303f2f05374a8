"""The reader interface over JPEG folders and packed stores, on real frames of the sample clips."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
import pytest

from packing_data import SAMPLE_IDS, make_workdir
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.pack import pack_videos
from tsnpipe.stages.store.reader import FolderReader, Hdf5Reader, LmdbReader, frame_name, open_reader

VIDEO = SAMPLE_IDS[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("store") / "W", count=6)


@pytest.fixture(scope="module")
def readers(workdir):
    pack_videos(workdir, workdir / "stores" / "frames.lmdb", "lmdb", SAMPLE_IDS[:3])
    pack_videos(workdir, workdir / "stores" / "frames.hdf5", "hdf5", SAMPLE_IDS[:3])
    return {
        "folders": open_reader(workdir),
        "lmdb": open_reader(workdir / "stores" / "frames.lmdb"),
        "hdf5": open_reader(workdir / "stores" / "frames.hdf5"),
    }


def test_open_reader_picks_the_reader_by_path(workdir, readers):
    assert isinstance(readers["folders"], FolderReader)
    assert isinstance(readers["lmdb"], LmdbReader)
    assert isinstance(readers["hdf5"], Hdf5Reader)


def test_open_reader_rejects_a_folder_that_is_no_store(tmp_path):
    with pytest.raises(TsnpipeError, match="neither a workdir"):
        open_reader(tmp_path)


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
def test_counts_and_video_ids(readers, name):
    reader = readers[name]
    assert reader.video_ids() == sorted(SAMPLE_IDS[:3])
    assert reader.count(VIDEO, "rgb") == 6
    assert reader.count(VIDEO, "flow_x") == 5
    assert reader.count(VIDEO, "flow_y") == 5


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
@pytest.mark.parametrize("kind", ["rgb", "flow_x", "flow_y"])
def test_position_k_is_file_k_plus_one(workdir, readers, name, kind):
    folder = workdir / ("frames" if kind == "rgb" else "flow") / VIDEO
    raw = readers[name].frames(VIDEO, [4, 0, 2], kind, decode=False)
    assert raw == [(folder / frame_name(kind, k)).read_bytes() for k in (4, 0, 2)]
    assert frame_name(kind, 0).endswith("00001.jpg")


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
def test_decoded_rgb_is_rgb_order_and_flow_is_single_channel(workdir, readers, name):
    [rgb] = readers[name].frames(VIDEO, [1], "rgb")
    bgr = cv2.imread(str(workdir / "frames" / VIDEO / "img_00002.jpg"), cv2.IMREAD_COLOR)
    assert rgb.dtype == np.uint8 and rgb.shape == (128, 170, 3)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    [flow] = readers[name].frames(VIDEO, [0], "flow_x")
    assert flow.dtype == np.uint8 and flow.shape == (128, 170)


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
def test_out_of_range_position_names_the_video_and_the_count(readers, name):
    with pytest.raises(TsnpipeError, match="has 6 rgb images"):
        readers[name].frames(VIDEO, [6], "rgb")


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
def test_unknown_video_is_a_clear_error(readers, name):
    with pytest.raises(TsnpipeError, match="nope/v_nope"):
        readers[name].count("nope/v_nope", "rgb")


def _first_bytes(reader):
    return reader.frames(VIDEO, [3], "rgb", decode=False)[0]


@pytest.mark.parametrize("name", ["folders", "lmdb", "hdf5"])
def test_reader_pickles_after_use_and_reads_in_worker_processes(workdir, readers, name):
    reader = readers[name]
    expected = _first_bytes(reader)  # opened in this process
    clone = pickle.loads(pickle.dumps(reader))
    assert _first_bytes(clone) == expected
    with ProcessPoolExecutor(2) as pool:
        assert list(pool.map(_first_bytes, [reader, reader])) == [expected, expected]


def test_hdf5_blobs_written_chunked_by_other_tools_still_read_back(workdir, tmp_path):
    import h5py

    store = tmp_path / "chunked.hdf5"
    pack_videos(workdir, store, "hdf5", [VIDEO])
    with h5py.File(store / "shard-00001.h5", "r+") as shard:
        group = shard["videos"][VIDEO]
        data = group["rgb"][()]
        del group["rgb"]
        group.create_dataset("rgb", data=data, chunks=(4096,), compression="gzip")
    expected = [(workdir / "frames" / VIDEO / frame_name("rgb", k)).read_bytes() for k in (5, 0)]
    assert open_reader(store).frames(VIDEO, [5, 0], "rgb", decode=False) == expected
