"""Progress: a live bar on a terminal, one line every few seconds in a log, nothing with --no-progress."""

import io
import shutil
import time

from conftest import SAMPLES, run_tsnpipe
from tsnpipe.stages import progress
from tsnpipe.stages.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_and_no_carriage_returns(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    log = io.StringIO()
    for _ in progress_bar(range(6), stream=log, desc="flow", unit="pair"):
        time.sleep(0.03)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 2 <= len(lines) <= 6 and all(line.startswith("flow:") for line in lines)
    assert "6/6" in lines[-1]


def test_a_task_shorter_than_the_log_interval_writes_nothing_to_a_log():
    log = io.StringIO()
    for _ in progress_bar(range(100), stream=log, desc="pack"):
        pass
    assert log.getvalue() == ""  # the stage's closing line says what was done


def test_a_terminal_gets_a_live_bar():
    terminal = Terminal()
    for _ in progress_bar(range(3), stream=terminal, desc="frames"):
        pass
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_no_progress_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(3), stream=log, enabled=False, desc="frames"):
        pass
    assert log.getvalue() == ""


def test_extract_frames_logs_lines_when_stderr_is_a_file(tmp_path):
    videos = tmp_path / "videos" / "wave"
    videos.mkdir(parents=True)
    shutil.copy2(SAMPLES / "wave" / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", videos)
    done = run_tsnpipe("extract-frames", str(tmp_path / "videos"), "-w", str(tmp_path / "W"), "--size", "32",
                       "--jobs", "1")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "1 extracted" in done.stdout


def test_a_bar_that_waits_on_one_long_item_still_shows_its_time_in_a_log(monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.1)
    log = io.StringIO()
    bar = progress_bar(total=1, stream=log, desc="extract-frames", unit="video")
    time.sleep(0.75)  # one video in flight, no update
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and all("0/1" in line for line in lines), lines
    bar.update(1)
    bar.close()
    closed = log.getvalue()
    time.sleep(0.3)
    assert log.getvalue() == closed and "1/1" in closed.splitlines()[-1]  # nothing is drawn once the bar is closed


def test_a_bar_dropped_without_closing_stops_being_redrawn(monkeypatch):
    import gc

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.05)
    log = io.StringIO()
    bar = progress_bar(total=3, stream=log, desc="epoch 1")
    time.sleep(0.2)
    del bar  # a loop left by an exception: nobody closes it
    gc.collect()
    time.sleep(0.1)
    dropped = log.getvalue()
    time.sleep(0.3)
    assert log.getvalue() == dropped and dropped
