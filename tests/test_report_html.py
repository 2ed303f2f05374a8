"""The work folder's HTML page, opened in a real headless Chromium with every network request blocked.

The folder is real: extract-frames on two bundled clips and the deliberately corrupt one (a failed row with
ffmpeg's reason), then a quick TV-L1 extract-flow. Chromium is Debian's (`.ci/run` installs it), driven by
playwright through its executable path; there is no skip: without a browser the test fails.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SAMPLES, TEST_DATA, run_tsnpipe
from tsnpipe.cli import main
from tsnpipe.stages.report.wheel import flow_to_rgb

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIPS = ("wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi", "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Frames of two clips and of corrupted.mp4 (which fails), their TV-L1 flow, an LMDB store; no training."""
    root = tmp_path_factory.mktemp("report")
    videos = root / "videos"
    for rel in CLIPS:
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / rel, videos / rel)
    (videos / "broken").mkdir()
    shutil.copy2(TEST_DATA / "videos" / "corrupted.mp4", videos / "broken" / "corrupted.mp4")
    work = root / "work"
    runner = CliRunner()
    frames = runner.invoke(main, ["extract-frames", str(videos), "-w", str(work), "--fps", "4", "--size", "48",
                                  "-j", "1", "--no-progress"])
    assert frames.exit_code == 1 and "broken/corrupted" in frames.output  # the corrupt clip fails, the run goes on
    flow = runner.invoke(main, ["extract-flow", "-w", str(work), "--iterations", "5x1", "-j", "1", "--no-progress"])
    assert flow.exit_code == 0, flow.output
    pack = runner.invoke(main, ["pack", "-w", str(work), "--format", "lmdb", "--no-progress"])  # rows without times
    assert pack.exit_code == 0, pack.output
    return work


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_offline(browser, path):
    """The page at file://path with every other request (network or file) recorded and refused."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    url = path.resolve().as_uri()
    refused = []

    def route(request_route):
        if request_route.request.url == url:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(url)
    page.wait_for_load_state("load")
    return page, refused


def test_report_of_a_workdir_without_training_opens_offline_and_names_the_corrupt_clip(workdir, browser, tmp_path):
    result = run_tsnpipe("report", "-w", str(workdir), "--html")
    assert result.returncode == 0, result.stderr
    report = workdir / "report.html"
    assert f"wrote {report}" in result.stdout
    page, refused = open_offline(browser, report)
    assert refused == []
    failures = page.locator("#failed-videos tbody tr")
    assert failures.count() == 1
    cells = failures.first.locator("td").all_inner_texts()
    assert cells[0] == "broken/corrupted" and cells[1] == "frames" and "decode errors" in cells[2]
    widths = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
    alts = {alt for _, _, alt in widths}
    assert {"contact sheet of frames and flow", "flow colour wheel"} <= alts
    assert all(complete and width > 0 for complete, width, _ in widths), widths
    assert "No training run yet" in page.inner_text("#runs")
    stages = page.locator("#stages tbody tr").all_inner_texts()
    assert stages[0].split("\t")[:5] == ["frames", "3", "2", "2", "1"] and stages[1].startswith("flow\t2\t2\t2\t0")
    assert stages[2].startswith("pack-lmdb\t2\t2\t2\t0")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_shows_runs_sorted_and_fusion(workdir, browser, tmp_path):
    from tsnpipe.stages.scores.files import write_scores
    from tsnpipe.stages.scores.fuse import fuse_files
    from tsnpipe.stages.train.logs import write_metrics

    classes = ["a", "b", "c"]
    labels = np.array([0, 0, 1, 1, 2, 2])
    streams = {"rgb-11112222": np.eye(3)[[0, 0, 2, 2, 2, 0]], "flow-33334444": np.eye(3)[[0, 0, 1, 2, 2, 2]]}
    for name, scores in streams.items():
        run = workdir / "runs" / name
        run.mkdir(parents=True)
        write_metrics(run / "metrics.csv", [{"epoch": e, "train_loss": 1.0 / e, "train_top1": 0.2 * e,
                                             "val_mean_class": 0.1 * e, "seconds": 2.0} for e in (1, 2, 3)])
        write_scores(workdir / "scores" / f"{name}.pkl", [f"{classes[l]}/v{i}" for i, l in enumerate(labels)], labels,
                     classes, scores.astype(np.float32), {"modality": name.split("-")[0]}, {"split": 1})
    fuse_files([workdir / "scores" / f"{n}.pkl" for n in streams], weights=(1.0, 1.5),
               output=workdir / "scores" / "fused.pkl")
    out = tmp_path / "with_runs.html"
    result = CliRunner().invoke(main, ["report", "-w", str(workdir), "--html", str(out)])
    assert result.exit_code == 0, result.output
    page, refused = open_offline(browser, out)
    assert refused == []
    runs = page.inner_text("#runs")
    assert "best validation mean class accuracy 30.0% at epoch 3" in runs
    # runs by name: flow first; its class b has one of two videos right (the other taken for c): worst first
    table = page.locator("#runs table.sortable").first
    assert table.locator("tbody tr").first.inner_text().startswith("b\t2\t1\t50.0%\tc")
    table.locator("th", has_text="accuracy").click()  # the inline sort: ascending, then descending
    assert table.locator("tbody tr").first.inner_text().startswith("b\t")
    table.locator("th", has_text="accuracy").click()
    assert table.locator("tbody tr").first.inner_text().split("\t")[3] == "100.0%"
    # rgb: class b's two videos both taken for c, the most confused pair
    assert "b\tc\t2\t100.0%" in runs
    fusion = page.inner_text("#fusion")
    assert "fused.pkl\trgb+flow\tfused\t83.3%" in fusion and "1.5" in fusion
    assert all(w > 0 for w in page.evaluate("Array.from(document.images).map(i => i.naturalWidth)"))


def test_report_html_needs_a_workdir_and_says_so():
    result = CliRunner().invoke(main, ["report", "--html"])
    assert result.exit_code == 2 and "-w W" in result.output
    missing = CliRunner().invoke(main, ["report", "-w", "/nonexistent/work", "--html"])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output


def test_flow_colours_use_one_fixed_scale():
    u = np.array([[0.0, 20.0, 5.0, 40.0]])
    v = np.zeros_like(u)
    rgb = flow_to_rgb(u, v, scale=20.0).astype(int)[0]
    assert tuple(rgb[0]) == (255, 255, 255)  # still: white
    assert rgb[1][0] == 255 and rgb[1][1] < 10  # 20 px to the right: saturated red, as Middlebury's wheel
    assert rgb[3].max() < rgb[1].max()  # beyond the bound: darker
    small_alone = flow_to_rgb(u[:, 2:3], v[:, 2:3], scale=20.0)[0, 0]
    assert tuple(small_alone) == tuple(rgb[2])  # a 5 px motion has one colour whatever else is in the image
