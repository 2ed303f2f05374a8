"""`tsnpipe slurm`: one per-video stage as a Slurm job array, task K running `--shard K/N` of it.

It writes a plain sbatch script to W/slurm/ (readable, editable, resubmittable with `sbatch FILE`: what
cluster users already know) and submits it with `sbatch --parsable`. Each task runs the stage command as
typed, plus `-w W --shard $SLURM_ARRAY_TASK_ID/N`; so a task is exactly what a user can run by hand, and the
stage commands keep one meaning (they do the work where they run). The script asks Slurm for SIGUSR2 120 s
before the time limit (`--signal=B:USR2@120`): the shell passes it to tsnpipe, which stops as on Ctrl-C
(finished videos kept, temps removed), and requeues the task, which goes on where it stopped. SIGTERM
(preemption, scancel) reaches tsnpipe directly, and `--requeue` lets Slurm requeue a preempted task.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from tsnpipe.manifests.files import atomic_write_bytes
from tsnpipe.options import workdir_option
from tsnpipe.stages.errors import TsnpipeError

# the per-video stages a job array can run, with what one task asks for by default
RESOURCES = {
    "extract-frames": {"cpus": 4, "mem": "8G", "gpus": 0},
    "extract-flow": {"cpus": 8, "mem": "16G", "gpus": 1},
    "extract-features": {"cpus": 8, "mem": "32G", "gpus": 1},
}
STOP_SIGNAL_S = 120  # SIGUSR2 this long before the time limit: time to finish the videos' bookkeeping

SCRIPT = """\
#!/bin/bash
# Written by `tsnpipe slurm`: task K of this array runs shard K of {count} of `tsnpipe {command}`.
# Resubmit as it is with `sbatch {path}`; every task redoes only what is not finished.
{directives}

# SIGUSR2 ({stop_s} s before the time limit, or `scancel --batch --signal=USR2 JOB_TASK`): tsnpipe stops as on
# Ctrl-C, keeping every finished video, then this task requeues itself and goes on where it stopped.
stop_and_requeue() {{
    kill -USR2 "$pid" 2>/dev/null
    wait "$pid"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
    exit 0
}}
trap stop_and_requeue USR2
echo "tsnpipe: shard ${{SLURM_ARRAY_TASK_ID}}/{count} on $(hostname), restart ${{SLURM_RESTART_COUNT:-0}}"
{run} --shard "${{SLURM_ARRAY_TASK_ID}}/{count}" &
pid=$!
wait "$pid"
"""


def tsnpipe_executable() -> str:
    """The console script of this installation, so every task runs the same tsnpipe as the submitting one."""
    beside = Path(sys.executable).with_name("tsnpipe")
    found = str(beside) if beside.exists() else shutil.which("tsnpipe")
    if not found:
        raise TsnpipeError("Cannot find the tsnpipe command to put in the job script; install tsnpipe "
                           "(pip install -e .) in the environment the tasks will use.")
    return str(Path(found).absolute())


def directives(name: str, count: int, parallel: int | None, cpus: int, mem: str, gpus: int, time_limit: str | None,
               partition: str | None, account: str | None, log: str, extra: tuple[str, ...]) -> list[str]:
    lines = [f"--job-name={name}", f"--array=0-{count - 1}" + (f"%{parallel}" if parallel else ""),
             f"--cpus-per-task={cpus}", f"--mem={mem}"]
    lines += [f"--gres=gpu:{gpus}"] if gpus else []
    lines += [f"--time={time_limit}"] if time_limit else []
    lines += [f"--partition={partition}"] if partition else []
    lines += [f"--account={account}"] if account else []
    lines += [f"--output={log}", "--open-mode=append", f"--signal=B:USR2@{STOP_SIGNAL_S}", "--requeue"]
    lines += list(extra)
    return [f"#SBATCH {line}" for line in lines]


def on_cpu(args: list[str]) -> bool:
    """Whether the stage's options keep it off the GPU (OpenCV flow, or --device cpu)."""
    pairs = [" ".join(args[i:i + 2]) for i in range(len(args))] + args
    return any(text in pairs for text in ("--backend opencv", "--backend=opencv", "--device cpu", "--device=cpu"))


def check_stage_args(command: str, args: list[str], workdir: Path) -> None:
    """The stage's own options parsed now, at submission, so a typo is one line here and not N failed tasks."""
    from tsnpipe.cli import main

    if any(arg in ("-w", "--workdir", "--shard") or arg.startswith(("--workdir=", "--shard=")) for arg in args):
        raise click.UsageError("Give -w/--workdir to `tsnpipe slurm` itself and leave --shard out: each task gets "
                               "-w W --shard K/N.")
    stage = main.commands[command]
    with stage.make_context(f"tsnpipe {command}", [*args, "-w", str(workdir)]):
        pass


@click.command("slurm", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@workdir_option
@click.option("--tasks", "count", type=click.IntRange(min=1), required=True,
              help="Array tasks, and so shards: task K runs --shard K/TASKS.")
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="At most this many tasks at once (%N).")
@click.option("--cpus-per-task", "cpus", type=click.IntRange(min=1), default=None,
              help="Cores per task (default: 4 frames, 8 flow and features). extract-frames gets --jobs to match.")
@click.option("--mem", default=None,
              help="Memory per task, as sbatch takes it (default: 8G frames, 16G flow, 32G features).")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs per task, as --gres=gpu:N (default: 0 frames, 1 flow and features; 0 for OpenCV flow).")
@click.option("--time", "time_limit", default=None,
              help="Time limit per task, e.g. 4:00:00 (default: the partition's).")
@click.option("--partition", default=None, help="Slurm partition.")
@click.option("--account", default=None, help="Slurm account.")
@click.option("--sbatch", "extra", multiple=True, metavar="OPTION",
              help="Another sbatch option for the script, e.g. --sbatch=--qos=low (repeatable).")
@click.option("--after", default=None, metavar="JOBID",
              help="Start after this job (array) has ended, whatever its tasks' exit codes (afterany).")
@click.option("--submit/--no-submit", default=True, show_default=True,
              help="Submit the script with sbatch, or only write it.")
@click.argument("command", type=click.Choice(sorted(RESOURCES)))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def slurm(workdir, count, parallel, cpus, mem, gpus, time_limit, partition, account, extra, after, submit,
          command, args):
    """Run COMMAND (extract-frames, extract-flow or extract-features, with its ARGS) as a Slurm job array of
    TASKS tasks, each on its shard of the videos, and write its script to W/slurm/.

    \b
    e.g. tsnpipe slurm -w W --tasks 100 --parallel 20 extract-frames /data/kinetics400/train --fps 10
         tsnpipe slurm -w W --tasks 50 --after 1234 --time 4:00:00 extract-flow --backend torch --device cuda

    Each task holds its own lock and journal, so the tasks run together on one workdir (on a shared file
    system); `tsnpipe status -w W` shows every shard while they run and folds their rows in once they are done.
    """
    workdir = Path(workdir).absolute()
    args = list(args)
    check_stage_args(command, args, workdir)
    defaults = RESOURCES[command]
    cpus = cpus or defaults["cpus"]
    gpus = (0 if on_cpu(args) else defaults["gpus"]) if gpus is None else gpus
    if command == "extract-frames" and not any(arg in ("-j", "--jobs") or arg.startswith("--jobs=") for arg in args):
        args += ["--jobs", str(cpus)]
    folder = workdir / "slurm"
    label = command.removeprefix("extract-")
    script = folder / f"{label}-{count}.sbatch"
    run = " ".join(shlex.quote(part) for part in [tsnpipe_executable(), command, *args, "-w", str(workdir),
                                                   "--no-progress"])
    lines = directives(f"tsnpipe-{label}", count, parallel, cpus, mem or defaults["mem"], gpus, time_limit,
                       partition, account, str(folder / "logs" / f"{label}-%A_%a.out"), extra)
    lines.insert(1, f"#SBATCH --chdir={Path.cwd()}")
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(script, SCRIPT.format(count=count, command=command, path=script, directives="\n".join(lines),
                                             stop_s=STOP_SIGNAL_S, run=run).encode())
    script.chmod(0o755)
    sbatch = ["sbatch", "--parsable", *([f"--dependency=afterany:{after}"] if after else []), str(script)]
    if not submit:
        click.echo(f"Wrote {script}; submit it with: {shlex.join(sbatch[:1] + sbatch[2:])}")
        return
    job = submit_script(sbatch)
    click.echo(f"Submitted job array {job}: {count} shards of `tsnpipe {command}`"
               + (f", {parallel} at once" if parallel else "") + f" ({script}); follow it with `squeue -j {job}` "
               f"and `tsnpipe status -w {workdir}`; logs in {folder / 'logs'}.")


def submit_script(sbatch: list[str]) -> str:
    """sbatch's job id, or one sentence saying why Slurm refused the script."""
    if shutil.which("sbatch") is None:
        raise TsnpipeError("sbatch is not on this machine's PATH; run `tsnpipe slurm` on a Slurm login node, or "
                           "pass --no-submit to only write the script.")
    done = subprocess.run(sbatch, capture_output=True, text=True)
    if done.returncode != 0:
        why = " ".join(done.stderr.split())[-300:] or f"exit code {done.returncode}"
        raise TsnpipeError(f"sbatch refused {sbatch[-1]}: {why}; fix the option it names (or edit the script) "
                           "and submit again.")
    return done.stdout.strip().split(";")[0]
