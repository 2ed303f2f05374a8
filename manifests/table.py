"""A stage's manifest: one row per video, persisted as each video finishes and compacted atomically.

On disk: `W/manifests/<stage>.parquet` (the compacted table, written with page checksums and replaced with
os.replace) and `W/manifests/<stage>.journal.jsonl` (rows appended and fsynced the moment a video
finishes). Only one writer (the lock holder) appends and renames, which is all that works reliably on a
network file system. Loading applies the journal over the table, later rows winning.

Every journal line is `<crc32 of the JSON, 8 hex> <JSON row>`, so a line is verifiable on its own:
- a torn last line (a crash or a full disk mid-write) is not a row; the writer cuts it off before it
  appends, so the next row never lands on a fragment;
- a damaged line (garbled bytes, junk appended) is skipped with a warning; the writer folds the good
  rows into the table and sets the journal aside as `<journal>.damaged-<time>`; those videos are redone;
- a damaged table stops every command with one sentence pointing at `tsnpipe status --repair`, which
  sets it aside and rebuilds the rows from the outputs on disk.
Lines without a checksum (written by older versions) are accepted when they parse.

The table records its stage and the version of its layout (`SCHEMA_VERSION`) in the parquet metadata, so a
table of another stage copied or moved over it (`cp flow.parquet frames.parquet`) is refused with one
sentence pointing at `status --repair` instead of being read as this stage's rows. Tables of older versions,
without that record, are recognised by a column only one stage writes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import zlib
from pathlib import Path

from tsnpipe.manifests.files import ManifestError, write_error

MANIFEST_DIR = "manifests"
SCHEMA_VERSION = 1  # bump when the row layout changes in a way older readers must not accept
STAGE_KEY, SCHEMA_KEY = b"tsnpipe.stage", b"tsnpipe.schema"
# a column only this family of stages writes, to recognise the tables of older versions
MARK_COLUMNS = {"frames": "width", "flow": "pairs", "pack": "location"}
DAMAGED_MARK = ".damaged-"
_warned: set[str] = set()


def manifest_path(workdir: Path, stage: str) -> Path:
    return Path(workdir) / MANIFEST_DIR / f"{stage}.parquet"


def journal_path(workdir: Path, stage: str) -> Path:
    return Path(workdir) / MANIFEST_DIR / f"{stage}.journal.jsonl"


def warn(message: str) -> None:
    """One warning line on stderr, once per process."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def damaged_name(path: Path) -> Path:
    """Where a damaged file is set aside: beside it, stamped with the time (never overwriting another)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}{DAMAGED_MARK}{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}{DAMAGED_MARK}{stamp}-{n}"), n + 1
    return candidate


def encode_line(row: dict) -> bytes:
    text = json.dumps(row, default=str, ensure_ascii=True, separators=(",", ":"))
    return f"{zlib.crc32(text.encode()):08x} {text}\n".encode()


def decode_line(line: bytes) -> dict | None:
    """The row a complete journal line holds, or None when the line is damaged."""
    try:
        text = line.decode("ascii").rstrip("\n")
        if text[:1] != "{":  # `<crc> <json>`
            crc, _, text = text.partition(" ")
            if len(crc) != 8 or int(crc, 16) != zlib.crc32(text.encode()):
                return None
        row = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return row if isinstance(row, dict) and isinstance(row.get("video_id"), str) else None


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def table_stage(metadata: dict | None, columns: list[str], rows: list[dict]) -> tuple[str | None, int]:
    """(the stage a table belongs to, its schema version) from its metadata, or for an older table without it a
    guess from its columns (a pack table also by its rows' format); (None, 0) when it cannot be told."""
    metadata = metadata or {}
    if STAGE_KEY in metadata:
        return metadata[STAGE_KEY].decode(), int(metadata.get(SCHEMA_KEY, b"0"))
    for family, column in MARK_COLUMNS.items():
        if column in columns:
            formats = {row.get("format") for row in rows} - {None}
            return (f"pack-{formats.pop()}" if family == "pack" and len(formats) == 1 else family), 0
    return None, 0


def foreign_table(path: Path, stage: str, found: str | None, version: int) -> str | None:
    """Why the table at `path` cannot be read as `stage`'s, or None when it can."""
    fix = (f"run `tsnpipe status --repair -w {path.parent.parent}` to set it aside and rebuild {stage}'s rows from "
           "the outputs on disk (or delete it to redo that stage).")
    if version > SCHEMA_VERSION:
        return f"The manifest {path} was written by a newer tsnpipe (layout {version}); upgrade tsnpipe, or {fix}"
    if found is None or found == stage or (found == "pack" and stage.startswith("pack-")):
        return None
    return f"The manifest {path} is the table of the {found} stage, not of {stage} (copied over it?); {fix}"


def damaged_error(path: Path, error: Exception) -> ManifestError:
    reason = " ".join(str(error).split())[:120] or type(error).__name__
    return ManifestError(
        f"The manifest {path} is damaged ({reason}); run `tsnpipe status --repair -w {path.parent.parent}` to set it "
        "aside and rebuild its rows from the outputs on disk (or delete it to redo that stage).")


def read_arrow(path: Path, stage: str | None = None):
    """The compacted table as a pyarrow Table, every page's checksum verified (None when there is none yet);
    ManifestError when it is damaged or (given `stage`) another stage's."""
    if not path.exists():
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq  # pyarrow directly: a third of pandas' import time on every run

    try:
        table = pq.ParquetFile(path, page_checksum_verification=True).read()  # read_table would import pandas
    except Exception as error:  # truncated, garbled, not parquet: arrow raises many kinds, all mean damaged
        raise damaged_error(path, error) from None
    if stage is not None:
        formats = (table["format"].unique().to_pylist() if "format" in table.column_names
                   and STAGE_KEY not in (table.schema.metadata or {}) else [])
        found, version = table_stage(table.schema.metadata, table.column_names, [{"format": f} for f in formats])
        if why := foreign_table(path, stage, found, version):
            raise ManifestError(why)
    ids = table["video_id"] if "video_id" in table.column_names else None
    typed = ids is not None and (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type))
    if len(table) and not (typed and ids.null_count == 0):
        raise ManifestError(f"The manifest {path} has rows without a video id; run `tsnpipe status --repair "
                            f"-w {path.parent.parent}` to set it aside and rebuild its rows.")
    return table


def arrow_rows(table) -> list[dict]:
    """The rows of an arrow table as dicts, NaN read as None."""
    import pyarrow as pa

    if table is None:
        return []
    float_types = (pa.float16(), pa.float32(), pa.float64())
    columns = table.to_pydict()  # column by column, then zipped: twice as fast as to_pylist()
    for name, column in zip(table.column_names, table.columns):
        if column.type in float_types:  # only float columns can hold NaN
            columns[name] = [_clean(v) for v in columns[name]]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def read_table(path: Path, stage: str | None = None) -> list[dict]:
    """The rows of a compacted table; ManifestError when it is damaged or (given `stage`) another stage's."""
    return arrow_rows(read_arrow(path, stage))


def read_journal(path: Path) -> tuple[list[dict], list[int], bool]:
    """(rows of the verified lines, 1-based numbers of damaged lines, whether the last line is torn)."""
    if not path.exists():
        return [], [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() != b""  # the piece after the last newline: empty unless a write was cut short
    rows, damaged = [], []
    for number, line in enumerate(lines, start=1):
        row = decode_line(line)
        if row is None:
            damaged.append(number)
        else:
            rows.append(row)
    return rows, damaged, torn


class Manifest:
    """The rows of one stage in one workdir, keyed by video id.

    The table stays a pyarrow Table with the journal's rows beside it: `columns()` gives the few columns a
    plan needs with the journal applied, `rows_of()` dicts of a few rows; `rows` (a dict per video) is built
    only when asked for. A write of an unmaterialised manifest merges the table and the new rows column-wise."""

    def __init__(self, workdir: Path, stage: str):
        self.workdir, self.stage = Path(workdir), stage
        self.path, self.journal = manifest_path(workdir, stage), journal_path(workdir, stage)
        journal_rows, self.damaged_lines, self.torn = read_journal(self.journal)
        shard_rows, self.damaged_shards = self._shard_rows()
        self.table = read_arrow(self.path, stage)
        self.newer: dict[str, dict] = {}  # rows of the journal, the shard journals and this run, later ones winning
        for row in journal_rows + shard_rows:
            self.newer[row["video_id"]] = row
        self._rows: dict[str, dict] | None = None
        if self.damaged_lines:
            lines = ", ".join(map(str, self.damaged_lines[:5])) + ("..." if len(self.damaged_lines) > 5 else "")
            warn(f"{self.journal} has {len(self.damaged_lines)} damaged line(s) ({lines}); they are skipped and "
                 "the next run of that stage sets the journal aside and redoes those videos.")
        self._ready = False
        self.dirty = False  # rows recorded since the table was last written
        self.journal_rows = len(journal_rows) + len(shard_rows)  # rows not in the table yet

    def _shard_rows(self) -> tuple[list[dict], list[Path]]:
        from tsnpipe.manifests.shards import shard_rows  # shards build on this module

        return shard_rows(self.workdir, self.stage)

    @property
    def rows(self) -> dict[str, dict]:
        """Every row as a dict, keyed by video id (built on first use: a second or more at 240,000 videos)."""
        if self._rows is None:
            self._rows = {row["video_id"]: row for row in arrow_rows(self.table)}
            self._rows.update(self.newer)
        return self._rows

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return len(self._older_ids()) + len(self.newer)

    def _older_ids(self):
        """The table's video ids that no newer row replaces."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.table is None:
            return pa.array([], pa.string())
        ids = self.table["video_id"]
        if not self.newer:
            return ids
        return ids.filter(pc.invert(pc.is_in(ids, value_set=pa.array(list(self.newer), pa.string()))))

    def columns(self, names: list[str]):
        """`names` (video_id first) of every row as a pyarrow Table, the journal applied; a column no row has is
        all nulls. The rows are in no particular order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._rows is not None:
            return pa.Table.from_pylist([{c: row.get(c) for c in names} for row in self._rows.values()],
                                        schema=None) if self._rows else _empty(names)
        parts = []
        if self.table is not None:
            older = self.table
            if self.newer:
                ids = pa.array(list(self.newer), pa.string())
                older = older.filter(pc.invert(pc.is_in(older["video_id"], value_set=ids)))
            parts.append(pa.table({c: older[c] if c in older.column_names else pa.nulls(len(older))
                                   for c in names}))
        if self.newer:
            parts.append(pa.Table.from_pylist([{c: row.get(c) for c in names} for row in self.newer.values()]))
        if not parts:
            return _empty(names)
        return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]

    def rows_of(self, video_ids: list[str]) -> dict[str, dict]:
        """The rows of these videos (those the manifest has), as dicts."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._rows is not None:
            return {vid: self._rows[vid] for vid in video_ids if vid in self._rows}
        found = {vid: self.newer[vid] for vid in video_ids if vid in self.newer}
        rest = [vid for vid in video_ids if vid not in found]
        if rest and self.table is not None:
            at = pc.index_in(pa.array(rest, pa.string()), value_set=self.table["video_id"])
            positions = at.drop_null()
            if len(positions):
                for row in arrow_rows(self.table.take(positions)):
                    found[row["video_id"]] = row
        return found

    def _prepare(self) -> None:
        """Before the first write: drop this table's own temp files, cut a torn tail, set damaged lines aside,
        fold in the rows of the stage's shard journals (see shards.py)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        for leftover in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            leftover.unlink(missing_ok=True)
        if self.journal.exists():
            data = self.journal.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):
                os.truncate(self.journal, keep)
        self._ready = True
        if self.damaged_lines:
            aside = damaged_name(self.journal)
            self._write_table()
            os.replace(self.journal, aside)
            warn(f"{self.journal} had damaged lines; its good rows are now in {self.path} and the whole journal "
                 f"was set aside as {aside.name}.")
            self.damaged_lines = []
        from tsnpipe.manifests.shards import fold_shards

        fold_shards(self)

    def record(self, row: dict) -> None:
        """Add or replace a row and make it durable before returning."""
        self.record_many([row])

    def record_many(self, rows: list[dict]) -> None:
        """Add or replace rows and make them durable before returning: one write and one fsync for all."""
        if not rows:
            return
        if not self._ready:
            self._prepare()
        for row in rows:
            self.newer[row["video_id"]] = row
            if self._rows is not None:
                self._rows[row["video_id"]] = row
        self.dirty = True
        self.journal_rows += len(rows)
        try:
            with open(self.journal, "ab") as fh:
                fh.write(b"".join(encode_line(row) for row in rows))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as error:
            what = f"the row of {rows[0]['video_id']!r} was" if len(rows) == 1 else f"{len(rows):,} rows were"
            raise write_error(self.journal, error, f"{what} not recorded") from None

    def compact(self) -> None:
        """Rewrite the table atomically with every row, then drop the journal it now contains."""
        if not self._ready:
            self._prepare()
        self._write_table()
        self.journal.unlink(missing_ok=True)
        self.dirty, self.journal_rows = False, 0

    def compact_if_changed(self) -> None:
        """Compact when rows were recorded or a journal is waiting; a run that changed nothing writes nothing."""
        if self.dirty or self.journal_rows or self.journal.exists():
            self.compact()

    def _merged(self):
        """Every row as one pyarrow Table sorted by video id: the table's rows that no newer row replaces, and
        the newer rows (None when their columns cannot be joined, then the rows are written as dicts)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.table is None or not self.newer:
            newer = rows_table(list(self.newer.values())) if self.newer else None
            merged = newer if self.table is None else self.table
        else:
            ids = pa.array(list(self.newer), pa.string())
            older = self.table.filter(pc.invert(pc.is_in(self.table["video_id"], value_set=ids)))
            try:
                merged = pa.concat_tables([older, rows_table(list(self.newer.values()))],
                                          promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                return None
        return merged.sort_by("video_id") if merged is not None else pa.table({"video_id": pa.array([], pa.string())})

    def _write_table(self) -> None:
        import pyarrow.parquet as pq

        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        table = self._merged() if self._rows is None else None
        try:
            if table is None:
                table = rows_table(sorted(self.rows.values(), key=lambda r: r["video_id"]))
            table = table.replace_schema_metadata({STAGE_KEY: self.stage.encode(), SCHEMA_KEY: str(SCHEMA_VERSION).encode()})
            pq.write_table(table, tmp, write_page_checksum=True)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise write_error(self.path, error, "the rows so far stay in the journal") from None
        self.table, self.newer = table, {}


def rows_table(rows: list[dict]):
    """Row dicts as a pyarrow Table with every key any row has (from_pylist alone takes the first row's keys)."""
    import pyarrow as pa

    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])


def _empty(names: list[str]):
    import pyarrow as pa

    return pa.table({c: pa.array([], pa.string()) if c == "video_id" else pa.nulls(0) for c in names})


def load_table(workdir: Path, stage: str):
    """The manifest of `stage` as a pandas DataFrame (empty when the stage never ran)."""
    import pandas as pd

    return pd.DataFrame(sorted(Manifest(workdir, stage).rows.values(), key=lambda r: r["video_id"]))


def stages_present(workdir: Path) -> list[str]:
    """The stages with a table, a journal or a run record (a run killed before its first row) in W/manifests; a
    folder this user cannot read is one sentence, not "no stage has run"."""
    folder = Path(workdir) / MANIFEST_DIR
    try:
        listing = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise ManifestError(f"Cannot read {folder} ({error.strerror}); run the command as the user who owns it, or "
                            "give this user read access to it.") from None
    suffixes = (".parquet", ".journal.jsonl", ".run.json")
    return sorted({name.split(".")[0] for name in listing if not name.startswith(".") and name.endswith(suffixes)})
