"""Progress bars that suit where stderr goes: a live bar on a terminal, one plain line every few seconds in a log.

tqdm redraws its bar with carriage returns; in a file those redraws pile up on one line (hundreds of them
for one run). Off a terminal, `progress_bar` shows nothing for the first LOG_EVERY_S seconds, then writes
one line at most every LOG_EVERY_S seconds, each ending in a newline; a bar that stays (leave=True) and has
shown itself writes its last state when it closes. A bar that nothing updates (one long video in flight) is
still redrawn, every second on a terminal and every LOG_EVERY_S seconds in a log, so its elapsed time shows
that the work goes on.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref

LOG_EVERY_S = 5.0
TERMINAL_EVERY_S = 1.0


class LogLines:
    """A file for tqdm that turns each carriage-return redraw into a line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for part in text.replace("\n", "\r").split("\r"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def on_terminal(stream=None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def progress_bar(iterable=None, *, enabled: bool = True, stream=None, **options):
    """tqdm on `stream` (stderr), drawn live on a terminal and as a line every LOG_EVERY_S seconds elsewhere;
    `enabled=False` (`--no-progress`) shows nothing. Other options go to tqdm (total, desc, unit, leave)."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if on_terminal(stream):
        bar = tqdm(iterable, file=stream, disable=not enabled, dynamic_ncols=True, **options)
        return keep_alive(bar, TERMINAL_EVERY_S)
    bar = tqdm(iterable, file=LogLines(stream), disable=not enabled, mininterval=LOG_EVERY_S, delay=LOG_EVERY_S,
               ncols=100, **options)
    return keep_alive(bar, LOG_EVERY_S)


def keep_alive(bar, every: float):
    """Redraw `bar` when `every` seconds passed since it last drew, until it closes or is dropped unclosed
    (a loop left by an exception); returns it.

    The thread is a daemon, holds the bar only weakly, and holds the bar's lock while it draws, so it never
    draws over a close; a stream that went away ends it."""
    if bar.disable:
        return bar
    ref, lock = weakref.ref(bar), bar.get_lock()

    def redraw():
        while True:
            time.sleep(every)
            with lock:
                live = ref()
                if live is None or live.disable:  # dropped, or closed
                    return
                try:
                    if time.time() - live.last_print_t >= every:
                        live.refresh(nolock=True)
                except (OSError, ValueError):  # the stream was closed
                    return
                del live

    threading.Thread(target=redraw, name="progress-redraw", daemon=True).start()
    return bar
