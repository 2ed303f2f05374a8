"""The command line as a user meets it: help, version, doctor, status (the demo: test_demo.py)."""

import subprocess
import sys

from click.testing import CliRunner

from conftest import run_tsnpipe
from tsnpipe.cli import main


def test_help_lists_the_stages_and_does_not_import_torch():
    code = "import sys; from tsnpipe.cli import main; print('torch' in sys.modules, 'cv2' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False", "False"]
    proc = run_tsnpipe("--help")
    assert proc.returncode == 0
    assert "extract-frames" in proc.stdout and "status" in proc.stdout


def test_version():
    assert CliRunner().invoke(main, ["--version"]).output.startswith("tsnpipe, version ")


def test_doctor_names_ffmpeg_opencv_torch_and_device():
    proc = run_tsnpipe("doctor")
    assert proc.returncode == 0, proc.stderr
    for word in ("ffmpeg", "TV-L1 available", "torch", "device"):
        assert word in proc.stdout


def test_status_of_a_missing_workdir_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["status", "-w", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "not a tsnpipe workdir" in result.output

