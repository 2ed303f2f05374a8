"""What shards cost at Kinetics' size: N frames rows spread over K shard journals, as a job array leaves them.

    python benchmarks/shards.py --videos 240000 --shards 200 [--work /tmp/tsnpipe-shards] > shards.json

Rows are frames-manifest rows of the shape extract-frames writes, written in the journal's own line format.
Timed (wall seconds): slicing every id into its shard; reading the stage's rows from K shard journals against
from one journal holding the same rows; the per-shard report `tsnpipe status` prints while shards run; folding
(the shard rows appended to the journal, the table written, the shard journals removed) against compacting
the same rows from one journal (what an unsharded run's end costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from tsnpipe.manifests.shards import Shard, fold_all, shard_journal_path, shard_of, shard_report
from tsnpipe.manifests.table import Manifest, encode_line, journal_path


def rows(count: int) -> list[dict]:
    return [{"video_id": f"class_{i % 400:03d}/{i:011d}_000010_000020", "source": f"/data/k400/{i}.mp4",
             "params_hash": "0123456789abcdef", "started_at": "2026-12-07T03:00:00", "status": "done", "error": None,
             "output": f"frames/class_{i % 400:03d}/{i:011d}_000010_000020", "frames": 100, "width": 340,
             "height": 256, "src_fps": 30.0, "duration": 10.0, "seconds": 1.5,
             "fingerprint": json.dumps({"size": 1_000_000 + i, "mtime_ns": 1_700_000_000_000_000_000 + i,
                                        "hash": f"{i:064x}"})}
            for i in range(count)]


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=240_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tsnpipe-shards"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    sharded, single = args.work / "sharded", args.work / "single"
    all_rows = rows(args.videos)
    owners, slice_s = timed(lambda: [shard_of(row["video_id"], args.shards) for row in all_rows])
    lines = [[] for _ in range(args.shards)]
    for owner, row in zip(owners, all_rows):
        lines[owner].append(encode_line(row))
    for k, shard_lines in enumerate(lines):
        path = shard_journal_path(sharded, "frames", Shard(k, args.shards))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(shard_lines))
    journal_path(single, "frames").parent.mkdir(parents=True, exist_ok=True)
    journal_path(single, "frames").write_bytes(b"".join(b"".join(shard_lines) for shard_lines in lines))
    one, one_s = timed(lambda: Manifest(single, "frames"))
    many, many_s = timed(lambda: Manifest(sharded, "frames"))
    assert many.rows.keys() == one.rows.keys()
    report, report_s = timed(lambda: shard_report(sharded, "frames"))
    _, fold_s = timed(lambda: fold_all(sharded, ["frames"]))
    _, compact_s = timed(lambda: Manifest(single, "frames").compact())  # the same rows from one journal
    assert len(Manifest(sharded, "frames").rows) == args.videos and not report["0/%d" % args.shards]["running"]
    print(json.dumps({
        "machine": f"{platform.node()} {os.cpu_count()} cores", "load_average": os.getloadavg(),
        "videos": args.videos, "shards": args.shards,
        "smallest_shard": min(map(len, lines)), "largest_shard": max(map(len, lines)),
        "slice_s": slice_s, "read_one_journal_s": one_s, "read_shard_journals_s": many_s,
        "status_shard_report_s": report_s, "fold_s": fold_s, "compact_one_journal_s": compact_s,
    }, indent=2))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
