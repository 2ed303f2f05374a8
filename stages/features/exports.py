"""What made each CSV of an export folder: `<out>/.tsnpipe-export.jsonl`, one JSON line per CSV written.

A line names the video, what made its CSV (the steps, the streams side by side, and the stamp of the features it
was resampled from: their row's start time, params hash and size) and the CSV's size. A CSV is up to date only
when its last line says the same of all of these and the file still has that size, so an export at another
`--bmn` into the same folder, new features, or a truncated CSV is written again. Lines are appended as each CSV
is renamed into place (a kill loses at most the lines of CSVs then written again) and the file is rewritten
whole, atomically, when it holds more than twice as many lines as CSVs. A line that does not parse is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORD = ".tsnpipe-export.jsonl"


class ExportRecord:
    def __init__(self, out: Path):
        self.path = Path(out) / RECORD
        self.made: dict[str, dict] = {}
        self.lines = 0
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    self.lines += 1
                    try:
                        entry = json.loads(line)
                        self.made[entry["video"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn or damaged line: that CSV is written again
        except FileNotFoundError:
            pass
        self.handle = None

    def up_to_date(self, video_id: str, made: dict, csv_path: Path) -> bool:
        entry = self.made.get(video_id)
        if entry is None or entry.get("made") != made:
            return False
        try:
            return csv_path.stat().st_size == entry.get("bytes")
        except OSError:
            return False

    def add(self, video_id: str, made: dict, csv_path: Path) -> None:
        entry = {"video": video_id, "made": made, "bytes": csv_path.stat().st_size}
        self.made[video_id] = entry
        if self.handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a", encoding="utf-8")
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()
        self.lines += 1

    def close(self) -> None:
        """Flush the appended lines to disk, and rewrite the file whole when it has grown past twice its CSVs."""
        if self.handle is not None:
            os.fsync(self.handle.fileno())
            self.handle.close()
            self.handle = None
        if self.lines > 2 * len(self.made) + 16:
            tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
            try:
                with open(tmp, "w", encoding="utf-8") as handle:
                    for entry in self.made.values():
                        handle.write(json.dumps(entry, sort_keys=True) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            finally:
                tmp.unlink(missing_ok=True)
