"""The `tsnpipe` command: one subcommand per stage, registered explicitly below.

Start-up stays light: command modules import torch and the other heavy parts inside their functions.
"""

from __future__ import annotations

import signal
import threading
import warnings

import click

from tsnpipe import __version__
from tsnpipe.manifests.files import ManifestError, os_error_message
from tsnpipe.stages.errors import TsnpipeError


# joblib warns, as a stopped run unwinds, that the videos its workers had in hand were cancelled: they were
# (the rerun does them), and the one line the stop prints says so
warnings.filterwarnings("ignore", message=r"\d+ tasks which were still being processed", category=UserWarning)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and `timeout` send) or SIGUSR2 (what the sbatch scripts of `tsnpipe slurm`
    ask Slurm to send before the time limit), raised where the process is so that it unwinds as Ctrl-C does:
    locks released, temp files removed, worker pools and loader workers stopped."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


def _raise_terminated(signum, frame):
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)  # a second signal does not cut the unwinding short
    raise Terminated(signum)


class Group(click.Group):
    """Turns the domain errors of any command into one-line messages, without a traceback, and SIGTERM (or
    SIGUSR2) into one line and exit code 128 + the signal (143 for SIGTERM, what the shell reports)."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = [signal.signal(stop, _raise_terminated) for stop in STOP_SIGNALS] if main_thread else None
        try:
            return super().invoke(ctx)
        except Terminated as stop:
            name = signal.Signals(stop.signum).name
            click.echo(f"Stopped by {name}; finished work is kept: run the command again to continue.", err=True)
            ctx.exit(128 + stop.signum)
        except (TsnpipeError, ManifestError) as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a full or read-only disk at any write is a bad state, not a bug
            message = os_error_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None
        finally:
            if main_thread:
                for stop, handler in zip(STOP_SIGNALS, previous):
                    signal.signal(stop, handler)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tsnpipe")
def main():
    """Temporal Segment Networks, from a folder of videos to fused two-stream scores.

    \b
    The stages chain through a work folder (--workdir W):
      extract-frames VIDEO_DIR  frames at 10 fps        -> W/frames/
      extract-flow              TV-L1 optical flow      -> W/flow/
      build-splits              train/test lists        -> W/splits/
      pack                      LMDB / HDF5 stores      -> W/stores/
      train --modality M        a TSN per modality      -> W/runs/
      test                      class scores            -> rgb.pkl, flow.pkl
      fuse rgb.pkl flow.pkl     two-stream fusion
    Every stage records each video in W/manifests/, so a rerun does only new, changed or failed work.
    `tsnpipe status -w W` shows what is up to date; `tsnpipe doctor` shows the tools in use;
    `tsnpipe slurm` runs a per-video stage as a Slurm job array of shards.
    """


def _register() -> None:
    from tsnpipe.cmd_features import export_features, extract_features
    from tsnpipe.cmd_flow import extract_flow
    from tsnpipe.cmd_frames import extract_frames
    from tsnpipe.cmd_pack import pack
    from tsnpipe.cmd_predict import predict
    from tsnpipe.cmd_splits import build_splits
    from tsnpipe.cmd_fuse import fuse
    from tsnpipe.cmd_report import report
    from tsnpipe.cmd_train import run_test, train
    from tsnpipe.demo import demo
    from tsnpipe.doctor import doctor
    from tsnpipe.run import run
    from tsnpipe.slurm import slurm
    from tsnpipe.status import status

    # commands
    main.add_command(extract_frames)
    main.add_command(extract_flow)
    main.add_command(build_splits)
    main.add_command(pack)
    main.add_command(status)
    main.add_command(doctor)
    main.add_command(demo)
    main.add_command(run)
    main.add_command(fuse)
    main.add_command(report)
    main.add_command(train)
    main.add_command(run_test)
    main.add_command(predict)
    main.add_command(extract_features)
    main.add_command(export_features)
    main.add_command(slurm)


_register()
