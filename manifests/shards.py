"""Shards: one per-video stage run by N independent processes at once on one workdir (Slurm array tasks, or
machines sharing an NFS folder), each on a fixed slice of the videos.

- Slice: video `v` belongs to shard `blake2b(v) mod N`, so adding videos never moves one between shards and
  the N slices are disjoint and cover every video.
- Journal: shard K of N appends its rows, in the journal's CRC line format, to its own file
  `manifests/<stage>.journal.shard-K-of-N.jsonl`; nothing else writes it, so shards never share a file.
  Readers apply the shard journals after the stage's table and journal (a shard's rows are the newest).
- Folding: the next plain (unsharded) writer of the stage, or `tsnpipe status`, writes the stage's table with
  the shard rows under the workdir lock before it records anything, then removes the shard journals; a crash in
  between only leaves rows the table holds, folded again. A torn last line is cut off; damaged lines are skipped with a warning and the shard
  journal is set aside as `<journal>.damaged-<time>` once its good rows are folded (those videos are redone).
- Locks: a shard holds the workdir lock file shared (LOCK_SH) and its own `<stage>.shard-K-of-N.lock`
  exclusively; a plain run holds the workdir lock exclusively. So any number of shards run together, a plain
  run (or a second copy of one shard) waits for none of them and is refused in one sentence, and shards of
  another N of the same stage are refused while their journals are not folded (their slices overlap).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tsnpipe.manifests.files import ManifestError, WorkdirBusy, lock_or_outlive_a_dead_holder, write_error
from tsnpipe.manifests.table import MANIFEST_DIR, Manifest, damaged_name, read_journal, warn

SHARD_NAME = re.compile(r"(?P<stage>.+)\.journal\.shard-(?P<k>\d+)-of-(?P<n>\d+)\.jsonl")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based, as Slurm's SLURM_ARRAY_TASK_ID) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, video_id: str) -> bool:
        return shard_of(video_id, self.count) == self.index


def shard_of(video_id: str, count: int) -> int:
    """The shard a video belongs to: a hash of its id, so the slices do not move when videos are added."""
    digest = hashlib.blake2b(video_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_journal_path(workdir: Path, stage: str, shard: Shard) -> Path:
    return Path(workdir) / MANIFEST_DIR / f"{stage}.journal.shard-{shard.index}-of-{shard.count}.jsonl"


def shard_lock_path(workdir: Path, stage: str, shard: Shard) -> Path:
    return Path(workdir) / MANIFEST_DIR / f".{stage}.shard-{shard.index}-of-{shard.count}.lock"


def shard_journals(workdir: Path, stage: str) -> list[tuple[Path, Shard]]:
    """The shard journals of a stage waiting to be folded, in shard order."""
    folder = Path(workdir) / MANIFEST_DIR
    found = []
    for path in folder.glob(f"{stage}.journal.shard-*-of-*.jsonl"):
        match = SHARD_NAME.fullmatch(path.name)
        if match and match["stage"] == stage:
            found.append((path, Shard(int(match["k"]), int(match["n"]))))
    return sorted(found, key=lambda found: (found[1].count, found[1].index))


def shard_rows(workdir: Path, stage: str) -> tuple[list[dict], list[Path]]:
    """Every verified row of the stage's shard journals (warning once about damaged lines), and the journals
    that hold damaged lines."""
    rows, damaged_journals = [], []
    for path, _ in shard_journals(workdir, stage):
        found, damaged, _ = read_journal(path)
        rows += found
        if damaged:
            damaged_journals.append(path)
            warn(f"{path} has {len(damaged)} damaged line(s); they are skipped and the next run of that stage "
                 "(or `tsnpipe status`) sets the journal aside and redoes those videos.")
    return rows, damaged_journals


def fold_shards(manifest: Manifest) -> int:
    """Fold the stage's shard journals in (the caller holds the workdir lock exclusively and has prepared the
    journal): the table is written with every row the manifest read, shard rows included, then the shard
    journals are removed (one with damaged lines set aside). A crash in between leaves shard rows the table
    already holds, folded again by the next writer before it records anything. Returns the journals folded."""
    found = shard_journals(manifest.workdir, manifest.stage)
    if not found:
        return 0
    manifest.compact()
    for path, _ in found:
        if path in manifest.damaged_shards:
            aside = damaged_name(path)
            os.replace(path, aside)
            warn(f"{path} had damaged lines; its good rows are now in {manifest.path} and the whole shard "
                 f"journal was set aside as {aside.name}.")
        else:
            path.unlink(missing_ok=True)
    return len(found)


def fold_all(workdir: Path, stages: list[str]) -> int:
    """Fold the shard journals of these stages into their tables; the caller holds the workdir lock."""
    folded = 0
    for stage in stages:
        if shard_journals(workdir, stage):
            Manifest(workdir, stage)._prepare()  # what a writer does first: cut a torn tail, set damage aside, fold
            folded += 1
    return folded


class ShardManifest(Manifest):
    """The rows of a stage as a shard sees them, recording into its own shard journal; it never writes the
    table (compacting is the plain run's job, under the exclusive lock)."""

    def __init__(self, workdir: Path, stage: str, shard: Shard):
        super().__init__(workdir, stage)
        self.journal = shard_journal_path(workdir, stage, shard)
        self.journal_rows = 0

    def _prepare(self) -> None:
        """Before the first write: cut a torn tail of this shard's journal; a journal with damaged lines is
        rewritten with its good lines only (the damaged one set aside)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._ready = True
        if not self.journal.exists():
            return
        rows, damaged, torn = read_journal(self.journal)
        if damaged:
            aside = damaged_name(self.journal)
            os.replace(self.journal, aside)
            self.record_many(rows)
            warn(f"{self.journal} had damaged lines; its good rows were kept and the old journal was set aside as "
                 f"{aside.name}.")
        elif torn:
            data = self.journal.read_bytes()
            os.truncate(self.journal, data.rfind(b"\n") + 1)

    def compact(self) -> None:
        pass

    def compact_if_changed(self) -> None:
        pass


class ShardLock:
    """Shard K of N of a stage: the workdir lock shared with the other shards, and this shard's lock alone."""

    def __init__(self, workdir: Path, stage: str, shard: Shard, command: str, videos: int | None = None):
        self.workdir, self.stage, self.shard, self.command = Path(workdir), stage, shard, command
        self.videos = videos  # in the shard, written beside the holder's pid for `tsnpipe status`
        self.handles: list = []

    def _open(self, path: Path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return open(path, "a+")
        except OSError as error:
            raise write_error(path, error, "nothing was started") from None

    def _lock(self, path: Path, mode: int, busy: str):
        fh = self._open(path)
        try:
            lock_or_outlive_a_dead_holder(fh, mode)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise WorkdirBusy(busy.format(holder=holder)) from None
        except OSError as error:  # e.g. an NFS mount without a lock service (ENOLCK)
            fh.close()
            raise ManifestError(f"Cannot lock {path} ({error.strerror}); the file system of the workdir does not "
                                "support locks: mount it with locking, or use a local workdir.") from None
        self.handles.append(fh)
        return fh

    def __enter__(self) -> "ShardLock":
        try:
            self._enter()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _enter(self) -> None:
        me = f"shard {self.shard} of {self.command} (pid {os.getpid()})"
        workdir_lock = self._lock(self.workdir / ".tsnpipe.lock", fcntl.LOCK_SH,
                                  f"{self.workdir} is in use by {{holder}}; shards run only while no unsharded "
                                  "run holds the workdir: wait for it to finish (or stop it) and try again.")
        os.pwrite(workdir_lock.fileno(), f"shards, e.g. {me}".ljust(160).encode(), 0)  # names us to a refused run
        manifests = self.workdir / MANIFEST_DIR
        guard = self._open(manifests / f".{self.stage}.shards.lock")
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)  # one shard at a time checks the others, for a moment
            others = {shard.count for _, shard in shard_journals(self.workdir, self.stage)} - {self.shard.count}
            if others:
                counts = " and ".join(f"of {n}" for n in sorted(others))
                raise WorkdirBusy(f"{manifests} holds rows of {self.stage} shards {counts}, whose videos overlap "
                                  f"shards of {self.shard.count}; let those shards finish, then run `tsnpipe status "
                                  f"-w {self.workdir}` to fold them in before starting shards of another count.")
            own = self._lock(shard_lock_path(self.workdir, self.stage, self.shard), fcntl.LOCK_EX,
                             f"shard {self.shard} of {self.stage} in {self.workdir} is already running ({{holder}}); "
                             "wait for it to finish (or stop it).")
            os.ftruncate(own.fileno(), 0)
            videos = f": {self.videos} videos" if self.videos is not None else ""
            os.write(own.fileno(), f"pid {os.getpid()} ({self.command} --shard {self.shard}){videos}".encode())
        finally:
            guard.close()

    def __exit__(self, *exc) -> None:
        for fh in reversed(self.handles):
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        self.handles = []


def running(workdir: Path, stage: str, shard: Shard) -> bool:
    """Whether a process holds this shard's lock now."""
    path = shard_lock_path(workdir, stage, shard)
    try:
        with open(path, "r") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def shard_report(workdir: Path, stage: str) -> dict[str, dict]:
    """For each shard journal of a stage not yet folded: rows done and failed, the first failures, running or not."""
    report = {}
    for path, shard in shard_journals(workdir, stage):
        rows, damaged, _ = read_journal(path)
        latest = {row["video_id"]: row for row in rows}
        failed = sorted(vid for vid, row in latest.items() if row.get("status") != "done")
        report[str(shard)] = {"running": running(workdir, stage, shard), "videos": shard_videos(workdir, stage, shard),
                              "done": sum(1 for row in latest.values() if row.get("status") == "done"),
                              "failed": len(failed), "first failed": failed[:3], "damaged lines": len(damaged)}
    return report


def shard_videos(workdir: Path, stage: str, shard: Shard) -> int | None:
    """How many videos the shard's last run had in its slice, as its lock file records it."""
    try:
        match = re.search(r": (\d+) videos$", shard_lock_path(workdir, stage, shard).read_text())
    except OSError:
        return None
    return int(match[1]) if match else None


def owned_temp(root: Path, shard: Shard):
    """A test for the temp paths below `root` that this shard's videos left (a temp is `<video name>.tmp-...`
    beside its output), so a shard never sweeps away a temp another shard is writing."""
    from tsnpipe.manifests.files import TEMP_MARK

    root = Path(root)

    def owns(path: Path) -> bool:
        relative = Path(path).relative_to(root)
        name = relative.name.split(TEMP_MARK)[0]
        return shard.owns(str(relative.parent / name) if str(relative.parent) != "." else name)

    return owns
