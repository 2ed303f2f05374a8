"""A few columns of a stage's manifest as one pandas DataFrame, read column by column.

`table.load_table` builds a dict per row, which at Kinetics' 240,000 videos costs seconds; a command
that needs three columns (`build-splits`: video_id, status, frames) reads them here straight from the
parquet table. The rows are the same: the compacted table with the journal applied over it, later rows
winning; a damaged table is the same ManifestError, damaged journal lines the same warning.
"""

from __future__ import annotations

from pathlib import Path

from tsnpipe.manifests.files import ManifestError
from tsnpipe.manifests.table import journal_path, manifest_path, read_journal, read_table, warn


def _parquet_columns(path: Path, columns: list[str]):
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in columns if c in names], page_checksum_verification=True).to_pandas()
    except Exception:  # damaged: let the row reader say so, in its words
        read_table(path)
        raise


def load_columns(workdir: Path, stage: str, columns: list[str]):
    """`columns` (video_id first) of every row of `stage`'s manifest; an empty DataFrame when the stage never ran."""
    import pandas as pd

    path, journal = manifest_path(workdir, stage), journal_path(workdir, stage)
    parts = [_parquet_columns(path, columns)] if path.exists() else []
    rows, damaged, _ = read_journal(journal)
    if damaged:
        warn(f"{journal} has {len(damaged)} damaged line(s); they are skipped and the next run of that stage sets "
             "the journal aside and redoes those videos.")
    if rows:
        parts.append(pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns))
    if not parts or not sum(map(len, parts)):
        return pd.DataFrame()
    frame = pd.concat(parts, ignore_index=True).reindex(columns=columns)
    if frame["video_id"].isna().any():  # journal lines without one are skipped as damaged; a table's are not
        raise ManifestError(f"The manifest {path} has rows without a video id; run `tsnpipe status --repair "
                            f"-w {workdir}` to set it aside and rebuild its rows.")
    if rows:  # journal rows replace the table's, and the table's order (by video id) holds for all
        frame = frame.drop_duplicates("video_id", keep="last").sort_values("video_id", kind="stable")
    return frame.reset_index(drop=True)
