"""`tsnpipe demo`: the stages run on the real clips bundled with tsnpipe."""

from __future__ import annotations

from pathlib import Path

import click

SAMPLES = Path(__file__).parent / "samples" / "videos"


@click.command("demo")
@click.option("--workdir", "-w", default="tsnpipe-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the demo writes its work.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=2, show_default=True)
@click.pass_context
def demo(ctx, workdir, jobs):
    """Run the pipeline on the 7 bundled UCF101/HMDB51 clips and show the result."""
    from tsnpipe.cmd_frames import extract_frames
    from tsnpipe.status import status

    click.echo(f"demo: {len(list(SAMPLES.rglob('*.avi')))} bundled clips in {SAMPLES}, work in {workdir}")
    try:
        ctx.invoke(extract_frames, video_dir=SAMPLES, workdir=str(workdir), fps=10.0, size=("short", 256),
                   quality=2, on_decode_error="fail", jobs=jobs, backend="loky", scheduler=None, progress=True)
    except SystemExit as exc:
        if exc.code:
            raise
    ctx.invoke(status, workdir=str(workdir), as_json=False)
