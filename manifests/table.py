"""A stage's manifest: one row per video, persisted as each video finishes and compacted atomically.

On disk: `W/manifests/<stage>.parquet` (the compacted table, replaced with os.replace) and
`W/manifests/<stage>.journal.jsonl` (rows appended and fsynced the moment a video finishes). Loading
applies the journal over the table, later rows winning; a torn last line from a crash is ignored, so a
row is either fully recorded or not at all. `compact()` folds the journal into the table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

MANIFEST_DIR = "manifests"


def manifest_path(workdir: Path, stage: str) -> Path:
    return Path(workdir) / MANIFEST_DIR / f"{stage}.parquet"


def journal_path(workdir: Path, stage: str) -> Path:
    return Path(workdir) / MANIFEST_DIR / f"{stage}.journal.jsonl"


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _read_table(path: Path) -> list[dict]:
    if not path.exists():
        return []
    import pyarrow.parquet as pq  # pyarrow directly: a third of pandas' import time on every run

    return [{k: _clean(v) for k, v in row.items()} for row in pq.read_table(path).to_pylist()]


def _read_journal(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by a crash mid-write: the row was never recorded
        rows.append(json.loads(line))
    return rows


class Manifest:
    """The rows of one stage in one workdir, keyed by video id."""

    def __init__(self, workdir: Path, stage: str):
        self.workdir, self.stage = Path(workdir), stage
        self.path, self.journal = manifest_path(workdir, stage), journal_path(workdir, stage)
        self.rows: dict[str, dict] = {}
        for row in _read_table(self.path) + _read_journal(self.journal):
            self.rows[row["video_id"]] = row

    def record(self, row: dict) -> None:
        """Add or replace a row and make it durable before returning."""
        self.rows[row["video_id"]] = row
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def compact(self) -> None:
        """Rewrite the table atomically with every row, then drop the journal it now contains."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        rows = sorted(self.rows.values(), key=lambda r: r["video_id"])
        columns = list(dict.fromkeys(key for row in rows for key in row))
        pq.write_table(pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]), tmp)
        os.replace(tmp, self.path)
        self.journal.unlink(missing_ok=True)


def load_table(workdir: Path, stage: str):
    """The manifest of `stage` as a pandas DataFrame (empty when the stage never ran)."""
    import pandas as pd

    return pd.DataFrame(sorted(Manifest(workdir, stage).rows.values(), key=lambda r: r["video_id"]))


def stages_present(workdir: Path) -> list[str]:
    folder = Path(workdir) / MANIFEST_DIR
    names = {p.name.split(".")[0] for p in folder.glob("*.parquet")} | {
        p.name.split(".")[0] for p in folder.glob("*.journal.jsonl")}
    return sorted(names)
