"""The demo's ETA learns each step's cost on this machine and scales it by the pace of the steps timed so far."""

import json

import pytest

from tsnpipe.eta import DEFAULT_S, Eta


def run_steps(eta, took: dict[str, float], start: float = 1000.0):
    """Announce each step as if it took `took[label]` seconds (the clock moved by hand)."""
    for label, seconds in took.items():
        eta.announce(label)
        eta.mark -= seconds
    eta.finish()


def test_costs_measured_in_one_run_are_the_next_runs_estimate(tmp_path, capsys):
    record = tmp_path / "cache" / "step_seconds.json"
    labels = ["extract-frames", "extract-flow", "train rgb", "fuse"]
    first = Eta(labels, epochs=4, started=0.0, record=record)
    assert first.expected["train rgb"] == pytest.approx(4 * DEFAULT_S["train"])  # nothing learned yet
    run_steps(first, {"extract-frames": 10.0, "extract-flow": 90.0, "train rgb": 40.0, "fuse": 2.0})
    kept = json.loads(record.read_text())
    assert kept["extract-flow"] == pytest.approx(90.0, abs=0.05) and kept["train rgb"] == pytest.approx(10.0, abs=0.05)
    second = Eta(labels, epochs=8, started=0.0, record=record)  # twice the epochs: twice the training
    assert second.expected == pytest.approx({"extract-frames": 10.0, "extract-flow": 90.0, "train rgb": 80.0,
                                             "fuse": 2.0}, abs=0.1)
    capsys.readouterr()
    second.announce("extract-frames")
    assert capsys.readouterr().out.endswith("about 3 min 02 s left\n")


def test_work_before_the_first_step_scales_the_first_estimate_to_the_load(tmp_path, capsys):
    record = tmp_path / "step_seconds.json"
    record.write_text(json.dumps({"make clips": 2.0, "extract-frames": 10.0, "extract-flow": 50.0}))
    eta = Eta(["extract-frames", "extract-flow"], epochs=1, started=0.0, record=record)
    eta.calibrate("make clips", 6.0)  # three times slower than when learned: the machine is loaded
    eta.announce("extract-frames")
    assert capsys.readouterr().out.endswith("about 3 min 00 s left\n")


def test_up_to_date_steps_teach_nothing(tmp_path):
    record = tmp_path / "step_seconds.json"
    record.write_text(json.dumps({"extract-frames": 10.0, "fuse": 1.0}))
    eta = Eta(["extract-frames", "fuse"], epochs=1, started=0.0, record=record)
    run_steps(eta, {"extract-frames": 0.2, "fuse": 1.5})  # frames were up to date
    assert json.loads(record.read_text()) == {"extract-frames": 10.0, "fuse": pytest.approx(1.5, abs=0.05)}
    assert eta.ran_expected == pytest.approx(1.0)


def test_a_damaged_record_falls_back_to_the_defaults(tmp_path):
    record = tmp_path / "step_seconds.json"
    record.write_text("{not json")
    assert Eta(["pack"], epochs=1, started=0.0, record=record).expected == {"pack": DEFAULT_S["pack"]}


def test_frames_progress_counts_bytes_so_its_eta_weighs_long_videos(tmp_path):
    from conftest import SAMPLES
    from tsnpipe.cmd_frames import frames_stage, video_items
    from tsnpipe.stages.frames import FrameParams

    items = video_items(SAMPLES)
    assert len(items) == 7 and all(item.weight == item.fingerprint["size"] > 10_000 for item in items)
    assert len({item.weight for item in items}) == 7 and frames_stage(SAMPLES, FrameParams()).unit == "B"
