"""Which videos a per-video stage has to work on, and why, decided column by column.

The videos a stage looks at are `Candidates`: columns of ids, sources and input fingerprints (each file's size
and mtime from one listing, or for a stage fed by another the canonical JSON of what its upstream rows say).
`plan` lines them up with the manifest's columns (pyarrow: params hash, status, output, fingerprint) and
applies `manifests.decide.needs_work`'s rule to whole columns at once. Only the rows the columns cannot settle
(a file whose mtime moved, so its content hash decides; a fingerprint that differs as text) and the rows with
work to do become Python objects; the rule for those is `needs_work` itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from tsnpipe.manifests.decide import (FAILED_BEFORE, INPUT_CHANGED, NEW, OUTPUT_MISSING, PARAMS_CHANGED,
                                      needs_content_hash, needs_work)
from tsnpipe.manifests.table import Manifest

# `{"hash": ..., "mtime_ns": ..., "size": ...}` as runs record a file's fingerprint; `seen` without the hash
FILE_FINGERPRINT = r'^\{(?P<hash>"hash": "[0-9a-f]+", )?"mtime_ns": (?P<mtime>-?\d+), "size": (?P<size>\d+)\}$'
PLAN_COLUMNS = ["video_id", "params_hash", "status", "output", "fingerprint", "seen"]
_encode = json.encoder.encode_basestring_ascii  # what json.dumps does to a str


def json_value(value) -> str:
    """`value` as json.dumps writes it (the fast paths for str and int)."""
    if type(value) is str:
        return _encode(value)
    return str(value) if type(value) is int else json.dumps(value)


def json_objects(columns: dict[str, list]) -> list[str]:
    """One `json.dumps(row, sort_keys=True)` per row from columns of values; a column of `RawJSON` lists holds
    text already encoded (a nested object)."""
    keys = sorted(columns)
    template = "{{" + ", ".join(f"{json.dumps(k)}: {{}}" for k in keys) + "}}"  # keys are plain names
    encoded = [column if isinstance(column, RawJSON) else [json_value(v) for v in column]
               for column in (columns[k] for k in keys)]
    return [template.format(*parts) for parts in zip(*encoded)]


class RawJSON(list):
    """A column of JSON text, put into `json_objects` as it is."""


@dataclass(frozen=True)
class Item:
    """One video as a stage sees it: its id, where its input is, and the input's fingerprint."""

    video_id: str
    source: str
    fingerprint: dict
    weight: int = 1  # units of progress (videos, frames, pairs)


@dataclass
class Candidates:
    """The videos a stage looks at, as columns. A file input has `sizes` and `mtimes` (from one listing; a file
    that could not be read is in `unreadable` with why); an input derived from other manifests has its
    fingerprint as canonical JSON text (`json.dumps(fingerprint, sort_keys=True)`, as rows record it)."""

    ids: list[str]
    sources: list[str]
    fingerprints: list[str] | None = None
    sizes: list[int] | None = None
    mtimes: list[int] | None = None
    unreadable: dict[int, str] = field(default_factory=dict)
    weights: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self, index: int) -> dict:
        if index in self.unreadable:
            return {"unreadable": self.unreadable[index]}
        if self.fingerprints is not None:
            return json.loads(self.fingerprints[index])
        return {"size": self.sizes[index], "mtime_ns": self.mtimes[index]}

    def item(self, index: int) -> Item:
        weight = self.weights[index] if self.weights is not None else 1
        return Item(self.ids[index], self.sources[index], self.fingerprint(index), weight)

    def __iter__(self) -> Iterator[Item]:
        return (self.item(index) for index in range(len(self.ids)))

    def select(self, keep: Callable[[str], bool]) -> "Candidates":
        """The candidates whose video id `keep` accepts (one shard's slice), in the same order."""
        chosen = [index for index, vid in enumerate(self.ids) if keep(vid)]
        pick = lambda column: None if column is None else [column[index] for index in chosen]  # noqa: E731
        return Candidates(pick(self.ids), pick(self.sources), pick(self.fingerprints), pick(self.sizes),
                          pick(self.mtimes), {new: self.unreadable[old] for new, old in enumerate(chosen)
                                              if old in self.unreadable}, pick(self.weights))

    @classmethod
    def of_items(cls, items: list[Item]) -> "Candidates":
        return cls([item.video_id for item in items], [item.source for item in items],
                   fingerprints=[json.dumps(item.fingerprint, sort_keys=True) for item in items],
                   weights=[item.weight for item in items])


@dataclass
class Plan:
    """The videos with work to do, each with its reason; how many are up to date; and the rows of inputs whose
    content hash proved them unchanged, to record with their new size and mtime (`seen`)."""

    todo: list[tuple[Item, str]]
    up_to_date: int
    refreshed: list[dict] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, why in self.todo:
            counts[why] = counts.get(why, 0) + 1
        return counts


def _file_undecided(taken, cands: Candidates, hash_content: bool):
    """(input changed, undecided) masks of a file input against the recorded fingerprints: a size that moved is
    a changed input; a moved mtime with the same size is settled by a `seen` equal to the listing (hashed
    then) or else by the content hash (undecided here); a fingerprint of another shape is undecided."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    old = pc.extract_regex(taken["fingerprint"].fill_null(""), FILE_FINGERPRINT)
    seen = pc.extract_regex(taken["seen"].fill_null(""),
                            r'^\{"mtime_ns": (?P<mtime>-?\d+), "size": (?P<size>\d+)\}$')
    size, mtime = np.asarray(cands.sizes, dtype=np.int64), np.asarray(cands.mtimes, dtype=np.int64)

    def ints(struct, name):  # -1 where absent; never through float64, which cannot hold an mtime in ns exactly
        return pc.cast(pc.struct_field(struct, name), pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)

    parsed = old.is_valid().to_numpy(zero_copy_only=False)
    old_size, old_mtime, seen_size, seen_mtime = ints(old, "size"), ints(old, "mtime"), ints(seen, "size"), ints(
        seen, "mtime")
    has_hash = pc.not_equal(pc.struct_field(old, "hash"), "").fill_null(False).to_numpy(zero_copy_only=False)
    same_size = parsed & (old_size == size)
    moved = same_size & (old_mtime != mtime)
    hashed_then = moved & has_hash & (seen_size == size) & (seen_mtime == mtime)
    undecided = ~parsed | (moved & ~hashed_then) if hash_content else ~parsed
    changed = parsed & ~undecided & ((old_size != size) | (moved & ~hashed_then))
    unreadable = np.zeros(len(cands), dtype=bool)
    unreadable[list(cands.unreadable)] = True
    return changed & ~unreadable, undecided | unreadable


def plan(workdir, stage, cands: Candidates, manifest: Manifest, hasher: Callable[[list[str]], list[str]],
         output: str | None = None) -> Plan:
    """Each candidate judged by `needs_work`'s rule, column-wise. `hasher` content-hashes files (many at once);
    `output`: the one output every row must name (a store), else each row's own output must be on disk."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(cands)
    if not n:
        return Plan([], 0)
    recorded = manifest.columns(PLAN_COLUMNS)
    at = pc.index_in(pa.array(cands.ids, pa.string()), value_set=recorded["video_id"].cast(pa.string()).combine_chunks())
    taken = recorded.take(at)
    column = {name: taken[name].cast(pa.string()) for name in PLAN_COLUMNS[1:]}  # a column of nulls too
    new = at.is_null().to_numpy(zero_copy_only=False)
    params = ~pc.equal(column["params_hash"], stage.params_hash).fill_null(False).to_numpy(zero_copy_only=False)
    if cands.fingerprints is None:
        changed, undecided = _file_undecided(column, cands, stage.hash_content)
    else:  # the same text is the same input; other text may still be an equal dict (compared below)
        same = pc.equal(column["fingerprint"], pa.array(cands.fingerprints, pa.string())).fill_null(False)
        undecided, changed = ~same.to_numpy(zero_copy_only=False), np.zeros(n, dtype=bool)
    failed = ~pc.equal(column["status"], "done").fill_null(False).to_numpy(zero_copy_only=False)
    undecided &= ~new & ~params
    settled = ~new & ~params & ~undecided & ~changed & ~failed  # up to date if its output is there
    outputs = column["output"].to_pylist()
    present = OutputListing(workdir)
    missing = np.zeros(n, dtype=bool)
    for index in np.flatnonzero(settled):
        found = outputs[index]
        missing[index] = not (found and (output is None or found == output) and present(found))
    reasons = np.select([new, params, changed, failed, missing], [NEW, PARAMS_CHANGED, INPUT_CHANGED, FAILED_BEFORE,
                                                                  OUTPUT_MISSING], default="")
    todo = [(int(index), cands.item(int(index)), str(reasons[index]))
            for index in np.flatnonzero((reasons != "") & ~undecided)]
    judged = np.flatnonzero(undecided)
    exact, refreshed = _judge_rows(workdir, stage, cands, manifest, judged, hasher, output)
    todo += [(int(index), item, why) for index, (item, why) in zip(judged, exact) if why]
    todo.sort(key=lambda entry: entry[0])  # the candidates' order, as the videos were listed
    return Plan([(item, why) for _, item, why in todo], n - len(todo), refreshed)


def _judge_rows(workdir, stage, cands: Candidates, manifest: Manifest, indices, hasher, output):
    """`needs_work` row by row for the candidates the columns did not settle: their inputs hashed where only
    the mtime moved. Returns (item, reason) pairs and the rows to record as `seen`."""
    items = [cands.item(int(index)) for index in indices]
    rows = manifest.rows_of([item.video_id for item in items])
    to_hash, olds = [], []
    for index, item in enumerate(items):
        row = rows.get(item.video_id)
        old = json.loads(row["fingerprint"]) if row and row.get("fingerprint") else None
        olds.append(old)
        if old and "hash" in old and row.get("seen") and json.loads(row["seen"]) == item.fingerprint:
            items[index] = replace(item, fingerprint={**item.fingerprint, "hash": old["hash"]})  # touched, hashed then
        elif stage.hash_content and needs_content_hash(old, item.fingerprint):
            to_hash.append(index)
    for index, digest in zip(to_hash, hasher([items[i].source for i in to_hash])):
        items[index] = replace(items[index], fingerprint={**items[index].fingerprint, "hash": digest})
    present, judged, refreshed = OutputListing(workdir), [], []
    for item, old in zip(items, olds):
        row = rows.get(item.video_id)
        found = row.get("output") if row else None
        there = bool(found) and (output is None or found == output) and present(found)
        why = needs_work(row, item.fingerprint, stage.params_hash, there, old_fingerprint=old)
        judged.append((item, why))
        if why is None and row and "hash" in item.fingerprint:
            seen = json.dumps({k: v for k, v in item.fingerprint.items() if k != "hash"}, sort_keys=True)
            if seen != row.get("seen") and old != item.fingerprint:
                refreshed.append({**row, "seen": seen})
    return judged, refreshed


class OutputListing:
    """Whether outputs exist, by listing each folder that holds them once (a few listings of thousands of
    names instead of one stat per video)."""

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.names: dict[str, set[str] | None] = {}

    def __call__(self, output: str) -> bool:
        folder, _, name = output.rpartition("/")
        if folder not in self.names:
            try:
                with os.scandir(os.path.join(self.workdir, folder)) as entries:
                    self.names[folder] = {entry.name for entry in entries}
            except OSError:  # no such folder, or not one
                self.names[folder] = None
        names = self.names[folder]
        return names is not None and name in names


def has_column(manifest: Manifest, name: str) -> bool:
    """Whether the manifest's rows record `name` (as a column of its table, or in a newer row)."""
    if manifest.table is not None and name in manifest.table.column_names:
        return True
    return any(name in row for row in manifest.newer.values())


def done_columns(manifest: Manifest, names: list[str]) -> dict[str, list]:
    """`video_id` and `names` of the manifest's done rows, sorted by video id, as lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = manifest.columns(["video_id", "status", *names])
    table = table.filter(pc.equal(table["status"].cast(pa.string()), "done").fill_null(False)).sort_by("video_id")
    return {name: table[name].to_pylist() for name in ["video_id", *names]}


def upstream_json(manifest: Manifest, picked: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(ids, canonical JSON of `{k: row[k] for k in picked if k in row}`) of the manifest's done rows."""
    names = [name for name in picked if has_column(manifest, name)]
    columns = done_columns(manifest, names)
    ids = columns.pop("video_id")
    return ids, json_objects(columns) if names else ["{}"] * len(ids)
