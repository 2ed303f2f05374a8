"""`tsnpipe demo` as shipped: its verdict holds on 18 test videos, it searches fusion weights on a validation
split, keeps one checkpoint per run, and a second run does no work."""

from conftest import run_tsnpipe
from tsnpipe.demo import verdict
from tsnpipe.eta import Eta


def test_demo_as_shipped_finds_flow_beats_rgb_and_a_second_run_does_no_work(tmp_path):
    workdir = tmp_path / "demo"
    first = run_tsnpipe("demo", "-w", str(workdir), "--no-progress", timeout=3600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert out.splitlines()[0] == f"demo: working in {workdir} (about 180 MB; delete it when done)"
    assert "42 extracted, 0 up to date, 0 failed" in out
    assert "folders split 1: 24 train, 18 test videos" in out
    assert "about" in out.splitlines()[2] and "left" in out.splitlines()[2]  # the overall ETA
    assert "flow beats RGB" in out and "on 18 test videos" in out, out[-2000:]
    assert f"demo: report {workdir / 'report.html'}" in out and (workdir / "report.html").stat().st_size < 3e6
    assert "--search-weights" in out and "searched on" in out
    assert (workdir / "scores" / "fused.pkl").exists()
    assert len(list(workdir.glob("scores/validation/*.pkl"))) == 2
    runs = workdir / "runs"
    assert sorted(p.name for p in runs.glob("*/*.pt")) == ["best.pt", "best.pt"]
    assert "\r" not in first.stderr and "epoch 1/" in out

    second = run_tsnpipe("demo", "-w", str(workdir), "--no-progress", timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    for line in ("0 extracted, 42 up to date, 0 failed", "0 computed, 42 up to date, 0 failed",
                 "== train rgb: up to date", "== train flow: up to date", "== test rgb: up to date",
                 "== validate flow: up to date"):
        assert line in second.stdout
    assert "flow beats RGB" in second.stdout and "epoch 1/" not in second.stdout


def test_verdict_needs_a_clear_margin():
    assert "flow beats RGB" in verdict({"rgb": (0.33, 18), "flow": (0.9, 18)})
    assert "did not beat" in verdict({"rgb": (0.5, 18), "flow": (0.6, 18)})


def test_eta_scales_the_steps_left_by_the_pace_so_far(capsys, tmp_path):
    eta = Eta(["extract-frames", "extract-flow", "fuse"], epochs=1, started=0.0, record=tmp_path / "none.json")
    eta.expected = {"extract-frames": 10.0, "extract-flow": 20.0, "fuse": 10.0}
    eta.announce("extract-frames")
    eta.mark -= 20.0  # frames took twice as long as expected
    eta.announce("extract-flow")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("about 40 s left") and lines[1].endswith("about 1 min 00 s left")
