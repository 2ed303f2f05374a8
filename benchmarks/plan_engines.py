"""pyarrow against DuckDB for the one query a no-op plan asks: which of N listed videos need work?

    python benchmarks/plan_engines.py --sizes 240000,1000000 > engines.json

A manifest of N rows (video_id, params_hash, status, output, fingerprint as runs write it) is written as a
Parquet table; a listing of the same N videos (id, size, mtime; 1% with a new mtime, 0.1% new) is held in
memory, as `extract-frames` holds it. Timed, each in a fresh process (wall seconds, peak RSS): reading the
table and deciding new / params changed / input changed / failed for every listed video,
- pyarrow: `pc.index_in` of the listing's ids in the table's, `take`, fingerprint fields by `extract_regex`,
  comparisons as arrays (what `pipeline/planning.py` does);
- DuckDB (when importable): the listing registered as an arrow table, a LEFT JOIN on video_id with
  `regexp_extract` in SQL, counted by reason.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FINGERPRINT = r'^\{(?:"hash": "[0-9a-f]+", )?"mtime_ns": (-?\d+), "size": (\d+)\}$'


def make(folder: Path, n: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"class_{i % 20:02d}/video_{i:08d}" for i in range(n)]
    sizes, mtimes = np.arange(n) + 30_000, np.full(n, 1_765_000_000_000_000_000) + np.arange(n)
    fingerprint = [f'{{"hash": "{i:032x}", "mtime_ns": {m}, "size": {s}}}' for i, (s, m) in enumerate(zip(sizes, mtimes))]
    pq.write_table(pa.table({"video_id": ids, "params_hash": ["abcdef0123456789"] * n, "status": ["done"] * n,
                             "output": [f"frames/{v}" for v in ids], "fingerprint": fingerprint}),
                   folder / "frames.parquet", write_page_checksum=True)
    mtimes[::100] += 1  # touched
    listed = pa.table({"video_id": ids[: n - n // 1000] + [f"new/{i}" for i in range(n // 1000)],
                       "size": sizes, "mtime_ns": mtimes})
    pq.write_table(listed, folder / "listing.parquet")


def with_pyarrow(folder: Path) -> dict:
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    listing = pq.read_table(folder / "listing.parquet")
    started = time.perf_counter()
    table = pq.ParquetFile(folder / "frames.parquet", page_checksum_verification=True).read()
    at = pc.index_in(listing["video_id"], value_set=table["video_id"].combine_chunks())
    taken = table.take(at)
    parts = pc.extract_regex(taken["fingerprint"].fill_null(""), FINGERPRINT.replace("(-?", "(?P<m>-?").replace(
        r"(\d+)\}", r"(?P<s>\d+)\}"))
    size = pc.cast(pc.struct_field(parts, "s"), "int64").fill_null(-1).to_numpy()
    mtime = pc.cast(pc.struct_field(parts, "m"), "int64").fill_null(-1).to_numpy()
    new = at.is_null().to_numpy(zero_copy_only=False)
    params = ~pc.equal(taken["params_hash"], "abcdef0123456789").fill_null(False).to_numpy(zero_copy_only=False)
    changed = ~new & ((size != listing["size"].to_numpy()) | (mtime != listing["mtime_ns"].to_numpy()))
    failed = ~pc.equal(taken["status"], "done").fill_null(False).to_numpy(zero_copy_only=False)
    counts = {"new": int(new.sum()), "params": int((~new & params).sum()), "changed": int(changed.sum()),
              "failed": int((~new & failed).sum())}
    return {"s": round(time.perf_counter() - started, 3), "counts": counts}


def with_duckdb(folder: Path) -> dict:
    import duckdb
    import pyarrow.parquet as pq

    listing = pq.read_table(folder / "listing.parquet")
    started = time.perf_counter()
    con = duckdb.connect()
    con.register("listing", listing)
    row = con.execute(f"""
        SELECT count(*) FILTER (WHERE m.video_id IS NULL),
               count(*) FILTER (WHERE m.video_id IS NOT NULL AND m.params_hash <> 'abcdef0123456789'),
               count(*) FILTER (WHERE m.video_id IS NOT NULL AND (
                   regexp_extract(m.fingerprint, '{FINGERPRINT}', 2)::BIGINT <> l.size OR
                   regexp_extract(m.fingerprint, '{FINGERPRINT}', 1)::BIGINT <> l.mtime_ns)),
               count(*) FILTER (WHERE m.video_id IS NOT NULL AND m.status <> 'done')
        FROM listing l LEFT JOIN read_parquet('{folder / "frames.parquet"}') m USING (video_id)""").fetchone()
    counts = dict(zip(("new", "params", "changed", "failed"), map(int, row)))
    return {"s": round(time.perf_counter() - started, 3), "counts": counts}


def child(engine: str, folder: str) -> None:
    result = (with_pyarrow if engine == "pyarrow" else with_duckdb)(Path(folder))
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="240000,1000000")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    report = {"load": os.getloadavg(), "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",") if s):
        with tempfile.TemporaryDirectory() as tmp:
            make(Path(tmp), n)
            report["sizes"][n] = {}
            for engine in ("pyarrow", "duckdb"):
                proc = subprocess.run([sys.executable, __file__, "--child", engine, tmp], capture_output=True, text=True)
                report["sizes"][n][engine] = json.loads(proc.stdout) if proc.returncode == 0 else {
                    "skipped": proc.stderr.strip().splitlines()[-1][:200]}
    report["load after"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
