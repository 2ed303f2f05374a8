"""The `pairs` flow layout of the stores: every image reads back pixel-identical to its folder file, stores
in the `images` layout (as written before the layout existed) still read, and a layout change re-packs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from packing_data import SAMPLE_IDS, make_workdir
from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.pack import pack_videos
from tsnpipe.stages.store.reader import frame_name, open_reader
from tsnpipe.stages.train.data import SnippetDataset

VIDEOS = SAMPLE_IDS[:2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("pairs") / "W", VIDEOS, count=6)


def _folder_image(workdir, video_id, kind, position, image_format="jpg"):
    return cv2.imread(str(workdir / "flow" / video_id / frame_name(kind, position, image_format)), cv2.IMREAD_GRAYSCALE)


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_pairs_layout_reads_back_every_flow_image_pixel_identical(workdir, fmt):
    store = workdir / "stores" / f"pairs.{fmt}"
    facts = pack_videos(workdir, store, fmt, VIDEOS, flow_layout="pairs")
    assert {fact["flow_layout"] for fact in facts} == {"pairs"}
    reader = open_reader(store)
    for video_id in VIDEOS:
        assert reader.flow_layout(video_id) == "pairs"
        count = reader.count(video_id, "flow_x")
        stack = reader.flow_stack(video_id, range(count))
        assert stack.dtype == np.uint8 and stack.shape == (count, 2, 128, 170)
        for position in range(count):
            for channel, kind in enumerate(("flow_x", "flow_y")):
                expected = _folder_image(workdir, video_id, kind, position)
                np.testing.assert_array_equal(stack[position, channel], expected)
                np.testing.assert_array_equal(reader.frames(video_id, [position], kind)[0], expected)
        # frames stay their JPEG bytes
        rgb = reader.frames(video_id, [0], "rgb", decode=False)[0]
        assert rgb == (workdir / "frames" / video_id / "img_00001.jpg").read_bytes()


def test_png_flow_packs_as_pairs_with_the_png_pixels(tmp_path):
    workdir = make_workdir(tmp_path / "W", VIDEOS[:1], count=4)
    folder = workdir / "flow" / VIDEOS[0]
    for path in sorted(folder.glob("flow_*.jpg")):  # lossless flow images, as extract-flow --format png writes
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path.with_suffix(".png")), np.roll(image, 3, axis=1))
        path.unlink()
    pack_videos(workdir, tmp_path / "s.lmdb", "lmdb", VIDEOS[:1], flow_layout="pairs")
    stack = open_reader(tmp_path / "s.lmdb").flow_stack(VIDEOS[0], [2, 0])
    np.testing.assert_array_equal(stack[0, 1], _folder_image(workdir, VIDEOS[0], "flow_y", 2, "png"))
    np.testing.assert_array_equal(stack[1, 0], _folder_image(workdir, VIDEOS[0], "flow_x", 0, "png"))


@pytest.mark.parametrize("fmt", ["lmdb", "hdf5"])
def test_store_in_the_images_layout_still_reads_and_repacks_as_pairs(workdir, fmt):
    store = workdir / "stores" / f"old.{fmt}"
    pack_videos(workdir, store, fmt, VIDEOS)  # the layout every store had before `pairs`
    reader = open_reader(store)
    assert reader.flow_layout(VIDEOS[0]) == "images"
    folder_stack = open_reader(workdir).flow_stack(VIDEOS[0], [0, 3])
    np.testing.assert_array_equal(reader.flow_stack(VIDEOS[0], [0, 3]), folder_stack)
    assert reader.frames(VIDEOS[0], [1], "flow_y", decode=False)[0] == \
        (workdir / "flow" / VIDEOS[0] / "flow_y_00002.jpg").read_bytes()
    reader.close()

    facts = pack_videos(workdir, store, fmt, VIDEOS, flow_layout="pairs")
    assert [fact["unchanged"] for fact in facts] == [False, False]  # another layout: packed again
    again = open_reader(store)
    assert again.flow_layout(VIDEOS[0]) == "pairs"
    np.testing.assert_array_equal(again.flow_stack(VIDEOS[0], [0, 3]), folder_stack)
    assert [fact["unchanged"] for fact in pack_videos(workdir, store, fmt, VIDEOS, flow_layout="pairs")] == [True, True]


def test_old_lmdb_meta_without_a_layout_reads_as_images(workdir, tmp_path):
    """A store written before the layout existed has no flow_layout in its meta entries."""
    import lmdb

    store = tmp_path / "old.lmdb"
    pack_videos(workdir, store, "lmdb", VIDEOS[:1])
    env = lmdb.open(str(store), max_dbs=2)
    meta_db = env.open_db(b"meta")
    with env.begin(write=True, db=meta_db) as txn:
        meta = json.loads(txn.get(VIDEOS[0].encode()))
        assert "flow_layout" not in meta
    env.close()
    reader = open_reader(store)
    np.testing.assert_array_equal(reader.flow_stack(VIDEOS[0], [1]), open_reader(workdir).flow_stack(VIDEOS[0], [1]))


def test_pairs_layout_gives_the_training_clips_the_folders_give(workdir):
    store = workdir / "stores" / "clips.hdf5"
    pack_videos(workdir, store, "hdf5", VIDEOS, flow_layout="pairs")
    args = (VIDEOS, [0, 1], [5, 5], "flow", 2, 2, 64)
    folders, packed = SnippetDataset(workdir, *args, mode="train"), SnippetDataset(store, *args, mode="train")
    for key in [(0, 7, 0), (1, 7, 3)]:
        (a, flip_a, _), (b, flip_b, _) = folders[key], packed[key]
        assert flip_a == flip_b and torch.equal(a, b)


def test_pairs_layout_refuses_raw_flow_bytes_with_a_sentence(workdir):
    store = workdir / "stores" / "raw.lmdb"
    pack_videos(workdir, store, "lmdb", VIDEOS[:1], flow_layout="pairs")
    with pytest.raises(TsnpipeError, match="--flow-layout images"):
        open_reader(store).frames(VIDEOS[0], [0], "flow_x", decode=False)
