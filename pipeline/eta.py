"""The time left of a chain of steps (`tsnpipe demo`), from what the same steps took on this machine before.

Each step's cost is learned: when a chain finishes, the seconds every step that did work took are kept in
`~/.cache/tsnpipe/step_seconds.json` (`$XDG_CACHE_HOME` honoured; training per epoch, so another epoch count
scales it). The next chain expects those seconds, and corrects them as it goes by its pace: the seconds the
steps timed so far took against what was expected of them. A step that was up to date tells nothing of the
machine's speed and is left out. Work done before the first step (the demo making its clips) is timed as a
step too, so even the first estimate is scaled to the machine's load of the moment. With nothing learned
yet, the costs measured on 2 idle cores (`DEFAULT_S`, docs/benchmarks.md) stand in.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

# seconds on 2 idle cores (the demo's sizes); "train" is per epoch, its start (importing torch) included
DEFAULT_S = {"make clips": 2.5, "extract-frames": 4.0, "extract-flow": 20.0, "build-splits": 1.0, "pack": 1.5,
             "train": 3.5, "test": 3.0, "validate": 2.0, "fuse": 1.0}
UP_TO_DATE_SHARE = 0.1  # a step done in less than this share of its expected time did no real work
RECORD_NAME = "step_seconds.json"


def record_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tsnpipe" / RECORD_NAME


def kind(label: str) -> str:
    """`train rgb` -> `train` (the default's key; the learned costs are kept per label, rgb apart from flow)."""
    return label.split()[0] if label.split()[0] in DEFAULT_S else label


def read_record(path: Path) -> dict[str, float]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and v > 0}


def write_record(path: Path, record: dict[str, float]) -> None:
    """Merge `record` into the file (temp and rename; a cache: a failure to write it costs only the learning)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}")
        temp.write_text(json.dumps({**read_record(path), **record}, indent=1, sort_keys=True))
        os.replace(temp, path)
    except OSError as error:
        click.echo(f"note: could not keep the step times in {path} ({error.strerror}); the next ETA will not learn "
                   "from this run.", err=True)


def minutes(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Eta:
    """Prints each step as it starts with the time left overall; learns the steps' costs for the next chain."""

    def __init__(self, labels: list[str], epochs: int, started: float, record: Path | None = None):
        self.record = record or record_path()
        self.learned = read_record(self.record)
        self.epochs = epochs
        self.expected = {label: self.expect(label) for label in labels}
        self.started, self.mark, self.current = started, started, None
        self.ran_s = self.ran_expected = 0.0
        self.measured: dict[str, float] = {}

    def per_unit(self, label: str) -> float:
        return self.learned.get(label) or DEFAULT_S.get(kind(label), 1.0)

    def expect(self, label: str) -> float:
        units = self.epochs if kind(label) == "train" else 1
        return self.per_unit(label) * units

    def timed(self, label: str, took: float, expected: float) -> None:
        if took > UP_TO_DATE_SHARE * expected:
            self.ran_s, self.ran_expected = self.ran_s + took, self.ran_expected + expected
            self.measured[label] = took / (self.epochs if kind(label) == "train" else 1)

    def calibrate(self, label: str, took: float) -> None:
        """Count work done before the first step (e.g. `make clips`) in the pace, and learn its cost."""
        self.timed(label, took, self.expect(label))

    def left(self) -> float:
        pace = self.ran_s / self.ran_expected if self.ran_expected > 0 else 1.0
        return pace * sum(self.expected.values())

    def announce(self, label: str) -> None:
        now = time.monotonic()
        self.close_step(now)
        self.current, self.mark = label, now
        click.echo(f"demo: {label} next; {minutes(now - self.started)} so far, about {minutes(self.left())} left")

    def close_step(self, now: float) -> None:
        if self.current is not None:
            self.timed(self.current, now - self.mark, self.expected.pop(self.current))
            self.current = None

    def finish(self) -> None:
        """Time the last step and keep what every step took on this machine, for the next estimate."""
        self.close_step(time.monotonic())
        if self.measured:
            write_record(self.record, {label: round(seconds, 3) for label, seconds in self.measured.items()})
