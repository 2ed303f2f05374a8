"""`tsnpipe doctor`: which ffmpeg, OpenCV, torch and device tsnpipe will use, and whether each works."""

from __future__ import annotations

import platform
import subprocess

import click


def ffmpeg_line() -> str:
    from tsnpipe.stages.frames import ffmpeg_executable

    exe = ffmpeg_executable()
    version = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{exe} ({version.replace('ffmpeg version ', '').split(' Copyright')[0]})"


def opencv_line() -> str:
    import cv2

    try:
        cv2.optflow.DualTVL1OpticalFlow_create()
        tvl1 = "TV-L1 available"
    except AttributeError:
        tvl1 = ("TV-L1 MISSING: another OpenCV wheel shadows opencv-contrib; run "
                "`pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python-headless && "
                "pip install opencv-contrib-python-headless`")
    return f"{cv2.__version__} ({tvl1})"


def torch_lines() -> list[str]:
    import torch
    import torchvision

    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU)"
    else:
        device = "cpu (no CUDA GPU visible)"
    return [f"torch        {torch.__version__}, torchvision {torchvision.__version__}", f"device       {device}"]


@click.command("doctor")
def doctor():
    """Print which ffmpeg, OpenCV, torch and device are in use, and check that TV-L1 is there."""
    from tsnpipe import __version__

    click.echo(f"tsnpipe      {__version__} (Python {platform.python_version()})")
    click.echo(f"ffmpeg       {ffmpeg_line()}")
    click.echo(f"opencv       {opencv_line()}")
    for line in torch_lines():
        click.echo(line)
