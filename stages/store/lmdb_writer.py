"""Write videos into an LMDB store: the `images` database holds one key per image,
`<video_id>/<kind>/<00001>` -> image bytes, or in the `pairs` flow layout one key per flow pair,
`<video_id>/flow_xy/<00001>` -> the pair's array (`flow_pairs`); the `meta` database holds one JSON entry
per video (counts per kind, checksum, bytes, flow_format: jpg or png, and for `pairs` flow_layout and
flow_size).

Each video is written in one transaction that first deletes the entries of its previous version, so a
kill mid-pack leaves every video either wholly old or wholly new (LMDB commits are atomic and durable);
the rerun packs what is left. Other videos' entries are never touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.store.flow_pairs import PAIRS
from tsnpipe.stages.store.pack import check_free_space
from tsnpipe.stages.store.reader import KINDS, lmdb_key, release_lmdb

LMDB_FILES = ("data.mdb", "lock.mdb")
DATABASES = (b"images", b"meta")  # the named databases of a tsnpipe store, as its main database lists them
MAP_SIZE = 1 << 40  # address space only: LMDB grows the file as data is written (sparse on Linux)


def _open(store_path: Path, create: bool):
    import lmdb

    release_lmdb(store_path)
    try:
        # mode 0666 less the umask, as for any other output (py-lmdb's default 0755 ignores a group-write umask);
        # the folder itself is made beforehand by write_videos
        return lmdb.open(str(store_path), map_size=MAP_SIZE, max_dbs=2, subdir=True, create=create, readahead=False,
                         mode=0o666)
    except lmdb.Error as error:
        raise TsnpipeError(f"Cannot open the LMDB store {store_path} ({error}); check the path and free disk space.") from error


def check_own(env, store_path: Path) -> None:
    """Refuse an LMDB database `tsnpipe pack` did not write: its main database names only the `images` and `meta`
    databases (or nothing yet), so a user's own LMDB, with or without a `meta` key, is never read or written."""
    import lmdb

    with env.begin() as txn:
        keys = [key for key, _ in txn.cursor()]
    strangers = [key for key in keys if key not in DATABASES]
    if strangers:
        shown = ", ".join(repr(key.decode(errors="replace"))[:40] for key in strangers[:3])
        raise TsnpipeError(f"{store_path} is an LMDB database `tsnpipe pack` did not write (it holds keys such as "
                           f"{shown}); give --store an empty or new folder, or one written by `tsnpipe pack --format lmdb`.")
    try:
        for name in keys:
            env.open_db(name, create=False)
    except lmdb.Error as error:
        raise TsnpipeError(f"{store_path} is an LMDB database `tsnpipe pack` did not write ({error}); give --store an "
                           "empty or new folder, or one written by `tsnpipe pack --format lmdb`.") from None


def stored_videos(store_path: Path) -> dict[str, dict]:
    """video_id -> {"checksum", "location", "flow_layout"} of every video in the store (empty when there is none yet)."""
    if not (store_path / "data.mdb").is_file():
        return {}
    env = _open(store_path, create=False)
    try:
        check_own(env, store_path)
        meta_db = env.open_db(b"meta")
        with env.begin(db=meta_db) as txn:
            stored = {}
            for key, value in txn.cursor():
                meta = json.loads(value)
                stored[key.decode()] = {"checksum": meta["checksum"], "location": f"{key.decode()}/",
                                        "flow_layout": meta.get("flow_layout", "images")}
            return stored
    finally:
        env.close()


def check_folder(store_path: Path) -> None:
    """Refuse a --store folder that holds anything but LMDB's own two files."""
    if not store_path.is_dir():
        return
    strangers = sorted(path.name for path in store_path.iterdir() if path.name not in LMDB_FILES)
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise TsnpipeError(f"{store_path} holds files `tsnpipe pack` did not write ({shown}); give --store an empty "
                           "or new folder, or one written by `tsnpipe pack --format lmdb`.")


def _entries(video) -> list[tuple[str, list[bytes]]]:
    """(key kind, blobs) the store keeps of a video: its frames, then its flow images or flow pair arrays."""
    if video.pairs is not None:
        return [("rgb", video.images["rgb"]), (PAIRS, video.pairs)]
    return [(kind, video.images[kind]) for kind in KINDS]


def _delete_video(txn, images_db, video_id: str, meta: dict) -> None:
    """Delete every image key of a video's previous version, in whichever flow layout it was written."""
    counts = meta["counts"]
    kinds = [("rgb", counts["rgb"])]
    if meta.get("flow_layout", "images") == "pairs":
        kinds.append((PAIRS, counts["flow_x"]))
    else:
        kinds += [("flow_x", counts["flow_x"]), ("flow_y", counts["flow_y"])]
    for kind, count in kinds:
        for position in range(count):
            txn.delete(lmdb_key(video_id, kind, position), db=images_db)


def write_videos(store_path: Path, videos: Iterable) -> Iterator[tuple[object, str]]:
    """Write each `VideoImages` in its own transaction, replacing its old entries; yield (video, key prefix)."""
    import lmdb

    check_folder(store_path)
    store_path.mkdir(parents=True, exist_ok=True)
    env = _open(store_path, create=True)
    try:
        check_own(env, store_path)
        images_db = env.open_db(b"images")
        meta_db = env.open_db(b"meta")
        for video in videos:
            check_free_space(store_path, video.nbytes)
            key = video.video_id.encode()
            with env.begin(write=True) as txn:
                old = txn.get(key, db=meta_db)
                if old is not None:
                    _delete_video(txn, images_db, video.video_id, json.loads(old))
                for kind, blobs in _entries(video):
                    for position, data in enumerate(blobs):
                        txn.put(lmdb_key(video.video_id, kind, position), data, db=images_db)
                meta = {"counts": video.counts, "checksum": video.checksum, "bytes": video.nbytes,
                        "flow_format": video.flow_format, **video.layout_meta()}
                txn.put(key, json.dumps(meta, sort_keys=True).encode(), db=meta_db)
            yield video, f"{video.video_id}/"
    except lmdb.Error as error:  # a failed commit (full disk, I/O error) leaves the earlier videos whole
        raise TsnpipeError(f"Cannot write the LMDB store {store_path} ({error}); the videos packed before are kept: "
                           "free some disk space and run `tsnpipe pack` again.") from None
    finally:
        env.close()
